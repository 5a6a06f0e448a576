//! The `marks` behaviour (host/tests/fresh_instances.rs): it reports what
//! earlier requests left in this instance, then leaves this request's mark
//! everywhere a Rust plugin can keep something: a static, a leaked 4 MiB heap
//! object, a page added with `memory.grow`, a closure called through the
//! indirect function table, and its stack. With `then = trap` it traps after
//! marking; with `then = spin` it spins until the host's deadline stops it.
//!
//! A mark is a word tagged in its high half with [`TAG`] and holding the
//! request's `mark` input in its low half, so a mark found anywhere in linear
//! memory is told apart from any other data and names the request that left it.

use core::arch::wasm32;
use std::alloc::Layout;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use optech_sdk::{Data, Error, Inputs};

const TAG: u64 = 0x0F7E_C4A7 << 32;
const TAG_MASK: u64 = 0xFFFF_FFFF << 32;
const WASM_PAGE: usize = 65_536;
const HEAP_BYTES: usize = 4 << 20;
/// Marks are written one every 8 KiB (every other host page), so a region
/// holds hundreds of separate dirty runs, not one the host resets in a piece.
const STRIDE: usize = 8_192;
const STACK_BYTES: usize = 64 << 10;

/// The last request's mark word, 0 if none.
static STATIC_MARK: AtomicU64 = AtomicU64::new(0);
/// Address of the last request's leaked heap object, 0 if none.
static HEAP: AtomicUsize = AtomicUsize::new(0);
/// Index of the page the last request grew, 0 if none.
static PAGE: AtomicUsize = AtomicUsize::new(0);
/// A closure of the last request, called through the function table.
static TABLE: Mutex<Option<Box<dyn Fn() -> u64 + Send>>> = Mutex::new(None);

pub fn marks(inputs: &Inputs) -> Result<Data, Error> {
    let mark: u32 = inputs.parse("mark")?;
    let word = TAG | u64::from(mark);

    // What is here already, read before anything is written.
    let pages = wasm32::memory_size::<0>();
    let (leftovers, first_leftover) = scan(8, pages * WASM_PAGE);
    let seen_static = STATIC_MARK.load(Ordering::SeqCst);
    let seen_heap = match HEAP.load(Ordering::SeqCst) {
        0 => 0,
        // SAFETY: the address of a live, leaked, 8-aligned allocation.
        addr => unsafe { core::ptr::read_volatile(addr as *const u64) },
    };
    let seen_page = match PAGE.load(Ordering::SeqCst) {
        0 => 0,
        // SAFETY: a page this instance grew, and memory never shrinks.
        page => unsafe { core::ptr::read_volatile((page * WASM_PAGE) as *const u64) },
    };
    let seen_table = TABLE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map_or(0, |f| f());

    // This request's marks. Memory the instance did not start with must be
    // zero until written: `dirty` counts the nonzero words found there.
    let page = wasm32::memory_grow::<0>(1);
    if page == usize::MAX {
        return Err(Error::failed("memory.grow refused a page"));
    }
    let page_start = page * WASM_PAGE;
    let mut dirty = nonzero(page_start, page_start + WASM_PAGE);
    mark_every_stride(page_start, WASM_PAGE, word);
    PAGE.store(page, Ordering::SeqCst);

    let layout =
        Layout::from_size_align(HEAP_BYTES, 8).map_err(|e| Error::failed(e.to_string()))?;
    // SAFETY: a non-zero size; the block is leaked, never freed.
    let heap = unsafe { std::alloc::alloc(layout) } as usize;
    if heap == 0 {
        return Err(Error::failed("no memory for the heap object"));
    }
    // Only the part above the probe page: below it, the allocator may hand
    // back memory this request freed already.
    dirty += nonzero(heap.max(page_start + WASM_PAGE), heap + HEAP_BYTES);
    mark_every_stride(heap, HEAP_BYTES, word);
    HEAP.store(heap, Ordering::SeqCst);

    mark_stack(word);
    STATIC_MARK.store(word, Ordering::SeqCst);
    *TABLE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(move || word));

    match inputs.get("then") {
        Some("trap") => wasm32::unreachable(),
        Some("spin") => loop {
            black_box(());
        },
        _ => {}
    }
    Ok(Data::new()
        .with("static", name(seen_static))
        .with("heap", name(seen_heap))
        .with("page", name(seen_page))
        .with("table", name(seen_table))
        .with("leftovers", leftovers)
        .with("first_leftover", name(first_leftover))
        .with("dirty", dirty)
        .with("memory_pages", pages))
}

/// A mark word as the request it names, `none` for 0, or what else it is.
fn name(word: u64) -> String {
    match word {
        0 => "none".into(),
        w if w & TAG_MASK == TAG => (w & 0xFFFF_FFFF).to_string(),
        w => format!("not a mark: {w:#x}"),
    }
}

/// Mark words in `[start, end)`: how many, and the first.
fn scan(start: usize, end: usize) -> (u64, u64) {
    let (mut count, mut first) = (0, 0);
    for addr in (start..end).step_by(8) {
        // SAFETY: inside linear memory, which is all readable, 8-aligned.
        let w = unsafe { core::ptr::read_volatile(addr as *const u64) };
        if w & TAG_MASK == TAG {
            count += 1;
            if first == 0 {
                first = w;
            }
        }
    }
    (count, first)
}

/// Nonzero words in `[start, end)`.
fn nonzero(start: usize, end: usize) -> u64 {
    (start..end)
        .step_by(8)
        // SAFETY: inside linear memory, 8-aligned.
        .filter(|&addr| unsafe { core::ptr::read_volatile(addr as *const u64) } != 0)
        .count() as u64
}

fn mark_every_stride(start: usize, len: usize, word: u64) {
    for addr in (start..start + len).step_by(STRIDE) {
        // SAFETY: inside a region this request owns, 8-aligned.
        unsafe { core::ptr::write_volatile(addr as *mut u64, word) };
    }
}

/// Marks on the stack, in a frame that is gone when the call returns.
#[inline(never)]
fn mark_stack(word: u64) {
    let mut frame = [0u64; STACK_BYTES / 8];
    for slot in frame.iter_mut().step_by(STRIDE / 8) {
        *slot = word;
    }
    black_box(&mut frame);
}
