//! Nothing here: the black-box tests live in the `blackbox` test target (main.rs).
