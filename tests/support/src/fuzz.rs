//! A proptest-driven fuzzer for the workspace's parsers of untrusted bytes (stable Rust: no
//! libFuzzer). Each crate's `tests/fuzz.rs` names its targets; this module holds what they
//! share:
//!
//! - [`Target`]: a parser under test, its kept corpus (`<crate>/fuzz-corpus/<target>/`, every
//!   file replayed on every test run) and where a failing input is written;
//! - [`mutated`]: structure-aware inputs, valid encodings with bytes flipped, inserted,
//!   deleted, duplicated, truncated, or replaced by type markers and huge lengths;
//! - [`CountingAlloc`]: a global allocator that measures the peak of live heap bytes while a
//!   parser runs, so "never allocates proportionally to a declared length" is checked, not
//!   hoped for.
//!
//! Cases per target: the target's default (sized so the whole run stays in seconds), or
//! `HELIUM_FUZZ_CASES` to run longer locally.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
};

use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestCaseError, TestRunner},
};

/// Counts live heap bytes of the current thread while [`peak_bytes`] runs. Install it in a
/// fuzz test binary with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping touches
// only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f` and returns its result with the most heap bytes it held at once (0 unless the
/// binary installed [`CountingAlloc`]).
pub fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.set(0);
    PEAK.set(0);
    ARMED.set(true);
    let out = f();
    ARMED.set(false);
    (out, PEAK.get().max(0) as usize)
}

/// Cases each target runs unless `HELIUM_FUZZ_CASES` says otherwise.
pub fn cases(default: u32) -> u32 {
    std::env::var("HELIUM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One parser under test.
pub struct Target {
    pub name: &'static str,
    /// `<crate>/fuzz-corpus/<name>/`: kept inputs, replayed on every run.
    pub corpus: PathBuf,
    /// Where the (shrunk) failing input is written, to be copied into the corpus.
    pub failure: PathBuf,
    /// Cases of a CI run.
    pub cases: u32,
    /// Most heap bytes a parse may hold at once for an input of `len` bytes: `per_byte * len
    /// + fixed`. Generous for real work, far below what a lying length field would cost.
    pub per_byte: usize,
    pub fixed: usize,
}

impl Target {
    /// `crate_dir` is the crate's `CARGO_MANIFEST_DIR`, `tmp` its `CARGO_TARGET_TMPDIR`.
    pub fn new(crate_dir: &str, tmp: &str, name: &'static str, cases: u32) -> Self {
        assert!(
            peak_bytes(|| drop(std::hint::black_box(vec![0u8; 64]))).1 >= 64,
            "install helium_test_support::fuzz::CountingAlloc as the #[global_allocator]"
        );
        Self {
            name,
            corpus: PathBuf::from(crate_dir).join("fuzz-corpus").join(name),
            failure: PathBuf::from(tmp).join("fuzz-failures").join(format!("{name}.bin")),
            cases,
            per_byte: 64,
            fixed: 8 << 20,
        }
    }

    pub fn alloc_bound(mut self, per_byte: usize, fixed: usize) -> Self {
        self.per_byte = per_byte;
        self.fixed = fixed;
        self
    }

    /// The kept inputs, by file name.
    pub fn corpus(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.corpus)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", self.corpus.display()))
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                if !path.is_file() {
                    return None;
                }
                Some((path.file_name()?.to_string_lossy().into_owned(), std::fs::read(&path).ok()?))
            })
            .collect();
        files.sort();
        files
    }

    /// The corpus files' bytes, as seeds for [`mutated`].
    pub fn seeds(&self) -> Vec<Vec<u8>> {
        self.corpus().into_iter().map(|(_, bytes)| bytes).collect()
    }

    /// Runs `check` on one input: it must neither panic, nor fail, nor hold more heap than
    /// the bound. A failing input is written to [`Target::failure`].
    pub fn guard(&self, input: &[u8], check: &dyn Fn(&[u8]) -> Result<(), String>) -> Result<(), String> {
        self.guard_with(input, &|| check(input))
    }

    fn guard_with(&self, input: &[u8], check: &dyn Fn() -> Result<(), String>) -> Result<(), String> {
        let (outcome, peak) = peak_bytes(|| catch_unwind(AssertUnwindSafe(check)));
        let bound = self.per_byte.saturating_mul(input.len()).saturating_add(self.fixed);
        let why = match outcome {
            Err(panic) => Some(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
            Ok(Err(why)) => Some(why),
            Ok(Ok(())) if peak > bound => Some(format!("held {peak} heap bytes for {} input bytes (bound {bound})", input.len())),
            Ok(Ok(())) => None,
        };
        match why {
            None => Ok(()),
            Some(why) => {
                if let Some(dir) = self.failure.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let _ = std::fs::write(&self.failure, input);
                Err(format!(
                    "{}: {why}\n  input ({} bytes) written to {}; once fixed, copy it into {}/",
                    self.name,
                    input.len(),
                    self.failure.display(),
                    self.corpus.display()
                ))
            }
        }
    }

    /// Replays the corpus, then runs [`Target::cases`] inputs drawn from `strategy`.
    pub fn run<S>(&self, strategy: S, check: impl Fn(&[u8]) -> Result<(), String>)
    where
        S: Strategy,
        S::Value: AsRef<[u8]>,
    {
        let corpus = self.corpus();
        assert!(!corpus.is_empty(), "{}: the corpus {} is empty", self.name, self.corpus.display());
        for (file, bytes) in &corpus {
            if let Err(e) = self.guard(bytes, &check) {
                panic!("corpus file {file}: {e}");
            }
        }
        let mut runner = TestRunner::new(self.config());
        let result = runner.run(&strategy, |input| {
            self.guard(input.as_ref(), &check).map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// Runs [`Target::cases`] values drawn from `strategy` (no corpus: for properties of
    /// generated values, such as round trips); a failing value's bytes are written out.
    pub fn run_values<S>(&self, strategy: S, check: impl Fn(&S::Value) -> Result<(), String>)
    where
        S: Strategy,
        S::Value: AsRef<[u8]>,
    {
        let mut runner = TestRunner::new(self.config());
        let result = runner.run(&strategy, |value| {
            self.guard_with(value.as_ref(), &|| check(&value)).map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    fn config(&self) -> Config {
        Config {
            cases: cases(self.cases),
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..Config::default()
        }
    }
}

/// Byte strings a parser treats specially: MessagePack type markers and huge lengths.
pub const MSGPACK_TOKENS: &[&[u8]] = &[
    b"\xc0", b"\xc2", b"\xc3", b"\x00", b"\x7f", b"\xff", b"\x80", b"\x90", b"\xa0",
    b"\xdd\xff\xff\xff\xff", // array32 of 4 Gi elements
    b"\xdf\xff\xff\xff\xff", // map32
    b"\xdb\xff\xff\xff\xff", // str32
    b"\xc6\xff\xff\xff\xff", // bin32
    b"\xc9\xff\xff\xff\xff\x01", // ext32
    b"\xdc\xff\xff", b"\xde\xff\xff", b"\xda\xff\xff", b"\xc5\xff\xff",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", // u64::MAX
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00", // i64::MIN
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", // NaN
    b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00", // +inf
    b"\xca\x80\x00\x00\x00", // -0.0 as f32
    b"\xa1v", b"\x01", b"\x02", b"\xa4kind", b"\xa5event",
];

/// Byte strings a JSON parser treats specially.
pub const JSON_TOKENS: &[&[u8]] = &[
    b"{", b"}", b"[", b"]", b",", b":", b"\"", b"\\", b"null", b"true", b"-1", b"0", b"1e400",
    b"18446744073709551615", b"18446744073709551616", b"4294967296", b"-0", b"1.5", b"NaN",
    b"\"\\ud800\"", b"\xff", b"\xc3\x28", b"\x00", b"\n", b" ", b"\"__metadata__\"",
    b"\"dtype\"", b"\"shape\"", b"\"data_offsets\"", b"\"F32\"", b"\"I64\"", b"\"event\"",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", b"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":",
];

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Edit {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Token(Index, Index),
    ReplaceWithToken(Index, Index),
    Delete(Index, usize),
    Duplicate(Index, usize, Index),
    Truncate(Index),
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit, tokens: &[&[u8]]) {
    let len = bytes.len();
    let at = |i: &Index| if len == 0 { 0 } else { i.index(len + 1) };
    match edit {
        Edit::FlipBit(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << (bit % 8),
        Edit::SetByte(i, b) if len > 0 => bytes[i.index(len)] = *b,
        Edit::Insert(i, more) => {
            let at = at(i);
            bytes.splice(at..at, more.iter().copied());
        }
        Edit::Token(i, t) if !tokens.is_empty() => {
            let at = at(i);
            bytes.splice(at..at, tokens[t.index(tokens.len())].iter().copied());
        }
        Edit::ReplaceWithToken(i, t) if len > 0 && !tokens.is_empty() => {
            let token = tokens[t.index(tokens.len())];
            let at = i.index(len);
            let end = (at + token.len()).min(len);
            bytes.splice(at..end, token.iter().copied());
        }
        Edit::Delete(i, n) if len > 0 => {
            let at = i.index(len);
            let end = (at + n).min(len);
            bytes.drain(at..end);
        }
        Edit::Duplicate(from, n, to) if len > 0 => {
            let from = from.index(len);
            let chunk = bytes[from..(from + n).min(len)].to_vec();
            let to = to.index(len + 1);
            bytes.splice(to..to, chunk);
        }
        Edit::Truncate(i) => {
            let at = at(i);
            bytes.truncate(at);
        }
        _ => {}
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::FlipBit(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::SetByte(i, b)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Edit::Token(i, t)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Edit::ReplaceWithToken(i, t)),
        1 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => (any::<Index>(), 1usize..64, any::<Index>()).prop_map(|(f, n, t)| Edit::Duplicate(f, n, t)),
        1 => (any::<Index>()).prop_map(Edit::Truncate),
    ]
}

/// Seeds from `seeds` (valid encodings, say) with one to eight edits each; `tokens` are the
/// format's special byte strings ([`MSGPACK_TOKENS`], [`JSON_TOKENS`]).
pub fn mutated<S>(seeds: S, tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>>
where
    S: Strategy<Value = Vec<u8>>,
{
    (seeds, proptest::collection::vec(edit(), 1..8)).prop_map(move |(mut bytes, edits)| {
        for e in &edits {
            apply(&mut bytes, e, tokens);
        }
        bytes
    })
}

/// One of the given seeds, unchanged.
pub fn one_of(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(seeds)
}

/// Arbitrary bytes, up to `max` long.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}
