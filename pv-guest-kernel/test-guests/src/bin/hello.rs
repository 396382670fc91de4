//! `hello`: the smallest guest. Prints `hello: PASS` and powers off.
#![no_std]
#![no_main]

use pv_runtime::{StartInfo, println};

fn main(_si: &'static StartInfo) {
    println!("hello: PASS");
}

pv_runtime::entry!(main);
