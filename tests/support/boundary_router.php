<?php
// The app PHP's built-in server runs in tests/boundary_servers.rs:
//   BOUNDARY_LOG=LOGFILE php -S 127.0.0.1:PORT boundary_router.php
// Every request is appended to LOGFILE as one JSON line, the shape boundary_apps.py
// writes: {"target": REQUEST_URI, "seen": {<HTTP_* key lowercased, without HTTP_>:
// <value>, "path_info": <the path of REQUEST_URI>}}. PHP turns `.` and ` ` in a header
// name into `_`, so `X.Auth.Subject` is read as HTTP_X_AUTH_SUBJECT.

/** Where a lenient router sends the path: boundary_apps.py's `route`. */
function route(string $path): string
{
    $path = str_replace(["\\", "\0"], ["/", ""], rawurldecode($path));
    $path = preg_replace('#;[^/]*#', '', $path);
    $segments = [];
    foreach (explode('/', $path) as $segment) {
        if ($segment === '' || $segment === '.') {
            continue;
        }
        if ($segment === '..') {
            array_pop($segments);
            continue;
        }
        $segments[] = $segment;
    }
    $trailing = str_ends_with($path, '/') ? '/' : '';
    return strtolower('/' . implode('/', $segments) . $trailing);
}

$target = $_SERVER['REQUEST_URI'] ?? '';
$seen = [];
foreach ($_SERVER as $key => $value) {
    if (is_string($value) && strncmp($key, 'HTTP_', 5) === 0) {
        $seen[strtolower(substr($key, 5))] = $value;
    }
}
$seen['path_info'] = explode('?', $target, 2)[0];
$line = json_encode(
    ['target' => $target, 'seen' => (object) $seen],
    JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE
);
file_put_contents(getenv('BOUNDARY_LOG'), $line . "\n", FILE_APPEND | LOCK_EX);

header('Content-Type: text/plain');
$secret = str_starts_with(route($seen['path_info']), '/api/');
echo $secret ? "php-secret\n" : "php-public\n";
echo $line, "\n";
