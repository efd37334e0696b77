<?php
// The ScaleEngine documentation's sevu.errorcount example, kept as written
// except for its syntax slips (the unquoted 'seek key, the unclosed array(
// and if blocks, the empty CURLOPT_URL) and the values the test passes in the
// environment: the server, the account and the filters.
foreach (array('SEVU_URL', 'SEVU_API_KEY', 'SEVU_CDN', 'SEVU_SECRET',
               'SEVU_KEY', 'SEVU_APP', 'SEVU_VIDEO', 'SEVU_PASS') as $name) {
    if (getenv($name) === false) {
        fwrite(STDERR, "$name is not set\n");
        exit(2);
    }
}

    $request = array(
        'command' => 'sevu.errorcount',
        'api_key' => getenv('SEVU_API_KEY'),
        'timestamp' => time(),
        'cdn' => (int) getenv('SEVU_CDN'),
        'key' => getenv('SEVU_KEY'),        /* optional */
        'app' => getenv('SEVU_APP'),                               /* optional */
        'video' => getenv('SEVU_VIDEO'),                              /* optional */
        'ip' => '',                              /* optional */
        'pass' => getenv('SEVU_PASS'),       /* optional */
        'success' => 1,                                     /* optional */
        'limit' => '25',                                    /* optional */
        'seek' => '0',                                       /* optional */
    );
        //Create request signature
    $json_request = json_encode($request);
    $sig = base64_encode(hash_hmac('sha256', $json_request,
        getenv('SEVU_SECRET'), true));
    $request['signature'] = $sig;
    $json_request = json_encode($request);
    $ch = curl_init();
    curl_setopt($ch, CURLOPT_URL, getenv('SEVU_URL')); // Set the URL
    curl_setopt($ch, CURLOPT_POST, true); // Perform a POST
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true); // If not set, curl prints output to the browser
    curl_setopt($ch, CURLOPT_HEADER, false); // If set, curl returns headers as part of the data stream
    curl_setopt($ch, CURLOPT_POSTFIELDS, array('json' => $json_request)); //'Json' string or 'PHP' serialized return
    //If your PHP host does not have a proper SSL certificate bundle, you will need to turn off SSL Certificate Verification
    //This is dangerous, and should only be done temporarily until a proper certificate bundle can be installed
    //curl_setopt($ch, CURLOPT_SSL_VERIFYHOST, false); // Turns off verification of the SSL certificate.
    //curl_setopt($ch, CURLOPT_SSL_VERIFYPEER, false); // Turns off verification of the SSL certificate.
    $response = curl_exec($ch); //Execute the API Call
    if (!$response) {
        // die('...') with a string exits with status 0; the test needs to see the failure.
        fwrite(STDERR, 'Failed to connect to ScaleEngine API: ' . curl_error($ch) . "\n");
        exit(1);
    }
    //Decode the response as an associative array 
    $arrResponse = json_decode($response, true); 
    if ($arrResponse) {
        //Operation completed successfully
        //TODO Add work here
    } else {
        //Operation failed
        echo 'An error occured processing your request:';
    }

// The test decodes the response itself, so hand it over untouched.
echo $response;
