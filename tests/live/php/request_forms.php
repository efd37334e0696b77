<?php
// sevu.request once per accepted `expire` form, each written by PHP itself
// (date('r') is RFC 2822, date('c') ISO 8601), and each request sent both as
// the documentation sends it (multipart, json_encode) and urlencoded with raw
// UTF-8 (JSON_UNESCAPED_UNICODE, and a serialize()d `php` field), as Perl and
// WordPress clients do. Prints one JSON list: what was sent, what PHP's
// strtotime() makes of it, and Usher's answer.
foreach (array('SEVU_URL', 'SEVU_API_KEY', 'SEVU_CDN', 'SEVU_SECRET') as $name) {
    if (getenv($name) === false) {
        fwrite(STDERR, "$name is not set\n");
        exit(2);
    }
}
$secret = getenv('SEVU_SECRET');

function post($fields) {
    $ch = curl_init();
    curl_setopt($ch, CURLOPT_URL, getenv('SEVU_URL'));
    curl_setopt($ch, CURLOPT_POST, true);
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    curl_setopt($ch, CURLOPT_POSTFIELDS, $fields);  // an array is multipart, a string urlencoded
    $response = curl_exec($ch);
    if ($response === false) {
        fwrite(STDERR, 'Failed to connect: ' . curl_error($ch) . "\n");
        exit(1);
    }
    return $response;
}

$later = time() + 3 * 86400;
$forms = array(
    'utc' => gmdate('Y-m-d H:i:s', $later),
    'date' => gmdate('Y-m-d', $later),
    'iso8601' => date('c', $later),
    'rfc2822' => date('r', $later),
    'unix' => (string) $later,
    'minute' => '+1 minute', 'minutes' => '+30 minutes',
    'hour' => '+1 hour', 'hours' => '+5 hours',
    'day' => '+1 day', 'days' => '+2 days',
    'week' => '+1 week', 'weeks' => '+3 weeks',
);
$out = array();
$n = 0;
foreach ($forms as $form => $expire) {
    foreach (array('multipart', 'urlencoded-json', 'urlencoded-php') as $encoding) {
        $n++;
        $request = array(
            'command' => 'sevu.request',
            'api_key' => getenv('SEVU_API_KEY'),
            'timestamp' => time(),
            'cdn' => (int) getenv('SEVU_CDN'),
            'app' => 'demo-live',
            'video' => "café-$n",   // non-ASCII, and unique so no two requests are byte-identical
            'pass' => "pw-$n",
            'ip' => '',
            'uses' => 1,
            'expire' => $expire,
        );
        if ($encoding === 'multipart') {
            $request['signature'] = base64_encode(hash_hmac('sha256', json_encode($request), $secret, true));
            $response = post(array('json' => json_encode($request)));
        } elseif ($encoding === 'urlencoded-json') {
            $json = json_encode($request, JSON_UNESCAPED_UNICODE);
            $request['signature'] = base64_encode(hash_hmac('sha256', $json, $secret, true));
            $response = post(http_build_query(array('json' => json_encode($request, JSON_UNESCAPED_UNICODE))));
        } else {
            $request['signature'] = base64_encode(hash_hmac('sha256', serialize($request), $secret, true));
            $response = post(http_build_query(array('php' => serialize($request))));
        }
        $answer = $encoding === 'urlencoded-php' ? unserialize($response) : json_decode($response, true);
        $out[] = array(
            'form' => $form,
            'encoding' => $encoding,
            'sent' => $expire,
            'strtotime' => gmdate('Y-m-d H:i:s', ctype_digit($expire) ? (int) $expire : strtotime($expire)),
            'answer' => $answer,
        );
    }
}
echo json_encode(array("results" => $out));
