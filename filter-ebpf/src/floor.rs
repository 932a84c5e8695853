//! The benchmark floor: an XDP program that drops at once. `cargo xtask bench filter` runs it
//! through the same BPF_PROG_TEST_RUN harness as the real filter, so the ratio between the two
//! is what the filter itself costs.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action::XDP_DROP, macros::xdp, programs::XdpContext};

#[xdp]
pub fn hookwall_floor(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: this program has no panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
