<?php
// For a worker without Composer: `require 'clients/php/autoload.php';` maps Procctl\ to src/,
// as Composer's PSR-4 autoloader does.
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Procctl\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 8)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
