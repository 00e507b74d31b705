//! The agent's file access inside a job directory, safe against what the trainer child may
//! have put there. The child runs untrusted TorchScript with write access to its job
//! directory: it may replace `checkpoints/` or `result.safetensors` with a symbolic link to
//! any file of the worker's user, a FIFO, or a hard link. The agent names every file itself
//! (from a step number, never from the child's output), and reaches it from the job
//! directory one component at a time with `O_NOFOLLOW`, so it never reads, uploads, truncates
//! or deletes anything outside that directory whatever the child printed or planted:
//! - [`open`] opens a regular file with a single link for reading (a symlink in any
//!   component, a FIFO, a device or a hard-linked file is refused);
//! - [`create`] creates a new file (never opens an existing one, never through a link);
//! - [`remove`] unlinks a file, or the link the child planted, never its target.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Component, Path},
};

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| refused("a path component holds a NUL byte"))
}

fn openat(dir: libc::c_int, name: &CString, flags: libc::c_int, mode: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall on a NUL-terminated name; the returned descriptor is owned here.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory holding `rel` (opened from `root` without following any link) and the name
/// of `rel`'s last component. `rel` must be relative, without `..` or `.`.
fn parent_of(root: &Path, rel: &Path) -> io::Result<(OwnedFd, CString)> {
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => names.push(name.as_bytes().to_vec()),
            _ => return Err(refused("a job file is named by a plain relative path")),
        }
    }
    let last = names.pop().ok_or_else(|| refused("empty path"))?;
    let root_name = cstr(root.as_os_str().as_bytes())?;
    let mut dir = openat(libc::AT_FDCWD, &root_name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for name in names {
        dir = openat(dir.as_raw_fd(), &cstr(&name)?, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("{} is not a plain directory: {e}", String::from_utf8_lossy(&name))))?;
    }
    Ok((dir, cstr(&last)?))
}

/// Opens `root/rel` for reading: a regular file with one link, reached through plain
/// directories.
pub fn open(root: &Path, rel: &Path) -> io::Result<File> {
    let (dir, name) = parent_of(root, rel)?;
    // Non-blocking, so that a FIFO planted by the child cannot hang the open.
    let fd = openat(dir.as_raw_fd(), &name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    use std::os::unix::fs::MetadataExt;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(refused("a job file must be a regular file with a single link"));
    }
    Ok(file)
}

/// Creates `root/rel` anew for writing (it must not exist: a link planted there is refused).
pub fn create(root: &Path, rel: &Path) -> io::Result<File> {
    let (dir, name) = parent_of(root, rel)?;
    let fd = openat(dir.as_raw_fd(), &name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644)?;
    Ok(File::from(fd))
}

/// Unlinks `root/rel`: the file, or whatever link sits there (never a link's target).
pub fn remove(root: &Path, rel: &Path) -> io::Result<()> {
    let (dir, name) = parent_of(root, rel)?;
    // SAFETY: a plain syscall on an owned descriptor and a NUL-terminated name.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_agent_never_reaches_outside_the_job_dir_through_what_the_child_planted() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"the owner's ssh key").unwrap();
        let job = tempfile::tempdir().unwrap();
        let root = job.path();

        // A plain file is read, and removed.
        std::fs::create_dir(root.join("checkpoints")).unwrap();
        std::fs::write(root.join("checkpoints/1.safetensors"), b"ok").unwrap();
        let mut s = String::new();
        io::Read::read_to_string(&mut open(root, Path::new("checkpoints/1.safetensors")).unwrap(), &mut s).unwrap();
        assert_eq!(s, "ok");
        remove(root, Path::new("checkpoints/1.safetensors")).unwrap();

        // result.safetensors → the secret: not read; removing it removes the link only.
        symlink(&secret, root.join("result.safetensors")).unwrap();
        assert!(open(root, Path::new("result.safetensors")).is_err());
        remove(root, Path::new("result.safetensors")).unwrap();
        assert!(secret.exists());

        // checkpoints/ → the outside dir: neither read nor deleted through it.
        std::fs::remove_dir(root.join("checkpoints")).unwrap();
        symlink(outside.path(), root.join("checkpoints")).unwrap();
        assert!(open(root, Path::new("checkpoints/secret")).is_err());
        assert!(remove(root, Path::new("checkpoints/secret")).is_err());
        assert!(create(root, Path::new("checkpoints/new")).is_err());
        assert!(secret.exists() && !outside.path().join("new").exists());

        // A hard link to the secret is refused; so is a FIFO (without hanging) and a path with `..`.
        std::fs::hard_link(&secret, root.join("hard")).unwrap();
        assert!(open(root, Path::new("hard")).is_err());
        let fifo = cstr(root.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(open(root, Path::new("fifo")).is_err());
        assert!(open(root, Path::new("../secret")).is_err());

        // create refuses an existing file, so a download never truncates a planted link.
        symlink(&secret, root.join("model.pt")).unwrap();
        assert!(create(root, Path::new("model.pt")).is_err());
        assert_eq!(std::fs::read(&secret).unwrap(), b"the owner's ssh key");
        create(root, Path::new("data.safetensors")).unwrap();
    }
}
