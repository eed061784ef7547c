//! What every eBPF object built from this crate needs: its licence (GPL, for the helpers that
//! require it) and a panic handler (never reached: the verifier rejects any path to it).

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
