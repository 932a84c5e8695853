//! A benchmark diagnostic: the floor plus one read, at the position of the source's summary bit,
//! of an array allocated like hookwall's summary (1 MiB unless the bench loads it smaller). `cargo xtask bench filter` runs it beside
//! the floor to measure what a single random read of a structure that size costs in the
//! BPF_PROG_TEST_RUN harness, apart from anything else the filter does.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use filter_common::index;

/// `BPF_F_MMAPABLE`, as for the summary: the same kind of kernel allocation.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map(name = "HW_PROBE")]
static PROBE: Array<u64> = Array::with_max_entries(index::V4_SUMMARY_WORDS, BPF_F_MMAPABLE);

/// Words of `HW_PROBE` minus one (a power of two minus one): the bench loads the probe with
/// smaller arrays too, setting this and the map's size together, to see what a read costs as
/// the array shrinks.
#[unsafe(no_mangle)]
static PROBE_WORD_MASK: u32 = index::V4_SUMMARY_WORDS - 1;

/// Ethernet header plus the IPv4 header up to the end of the source address.
const SRC_END: usize = 14 + 16;

#[xdp]
pub fn hookwall_probe(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + SRC_END > ctx.data_end() {
        return XDP_DROP;
    }
    // SAFETY: the source address lies inside the packet (checked above).
    let src = unsafe { ((data + SRC_END - 4) as *const [u8; 4]).read_unaligned() };
    let (word, mask) = index::summary_locate(u32::from_be_bytes(src), index::V4_SUMMARY_BITS);
    // SAFETY: a plain read of a constant the loader may have set; volatile so the compiler
    // does not fold in the default.
    let word = word & unsafe { core::ptr::read_volatile(&PROBE_WORD_MASK) };
    // The array is all zeros, so this drops; the read is what is measured.
    match PROBE.get(word) {
        Some(w) if w & mask != 0 => XDP_PASS,
        _ => XDP_DROP,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
