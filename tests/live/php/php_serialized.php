<?php
// The documentation's "'PHP' serialized return" variant: the request travels
// as serialize()d PHP in a 'php' form field, is signed over serialize() of the
// array without 'signature', and the answer comes back serialize()d too.
foreach (array('SEVU_URL', 'SEVU_API_KEY', 'SEVU_CDN', 'SEVU_SECRET', 'SEVU_KEY') as $name) {
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
        'key' => getenv('SEVU_KEY'),                        /* optional */
        'ip' => '',                                         /* optional */
        'success' => 1,                                     /* optional */
        'limit' => '25',                                    /* optional */
        'seek' => '0',                                      /* optional */
    );
        //Create request signature
    $php_request = serialize($request);
    $sig = base64_encode(hash_hmac('sha256', $php_request,
        getenv('SEVU_SECRET'), true));
    $request['signature'] = $sig;
    $php_request = serialize($request);
    $ch = curl_init();
    curl_setopt($ch, CURLOPT_URL, getenv('SEVU_URL')); // Set the URL
    curl_setopt($ch, CURLOPT_POST, true); // Perform a POST
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true); // If not set, curl prints output to the browser
    curl_setopt($ch, CURLOPT_HEADER, false); // If set, curl returns headers as part of the data stream
    curl_setopt($ch, CURLOPT_POSTFIELDS, array('php' => $php_request)); //'Json' string or 'PHP' serialized return
    $response = curl_exec($ch); //Execute the API Call
    if (!$response) {
        // die('...') with a string exits with status 0; the test needs to see the failure.
        fwrite(STDERR, 'Failed to connect to ScaleEngine API: ' . curl_error($ch) . "\n");
        exit(1);
    }
    // allowed_classes => false: the answer is plain data, never objects.
    $arrResponse = unserialize($response, array('allowed_classes' => false));
    if ($arrResponse === false) {
        fwrite(STDERR, "The response is not PHP-serialized:\n" . $response . "\n");
        exit(3);
    }

// Re-encode as JSON so the test can read what PHP itself decoded.
echo json_encode($arrResponse);
