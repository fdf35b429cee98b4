//! A file system that loses what was not synced, for the power-loss crash test.
//!
//! It is held in memory, mounted through FUSE. Every file keeps two contents: what was
//! written, and what was there at its last `fsync`/`fdatasync`; every directory keeps
//! two entry lists: the current one, and the one at its last `fsync`. On `crash` (a
//! line on stdin) every file and directory goes back to its synced self, as after a
//! power cut under a strict file system: unsynced data, files whose directory entry was
//! never synced, unsynced renames and unlinks are all undone. With a tear, one file that
//! had an unsynced write keeps a random prefix of that write, as a half-finished write
//! would leave it. Files are opened with direct I/O and nothing is cached by the
//! kernel, so what a reader sees after a crash is what the file system holds.
//!
//! Usage: `lossyfs MOUNTPOINT`. It prints `mounted` once the mount is up; then reads
//! commands, one per line, and answers each with one line:
//! - `crash SEED TEAR` (TEAR is 0 or 1): loses every unsynced change; answers
//!   `crashed FILES TORN` (files reverted, whether a write was torn);
//! - `exit` (or end of input): unmounts and exits.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, FUSE_ROOT_ID,
};
use libc::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};
use rand::{Rng, SeedableRng};

/// Nothing is cached by the kernel: every lookup and attribute read comes here.
const TTL: Duration = Duration::ZERO;

#[derive(Debug, Clone)]
struct Node {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    /// The parent directory (for `..`).
    parent: u64,
    data: Vec<u8>,
    synced: Vec<u8>,
    /// The last write since the last sync: offset and length.
    unsynced_write: Option<(usize, usize)>,
    children: BTreeMap<OsString, u64>,
    synced_children: BTreeMap<OsString, u64>,
}

impl Node {
    fn new(kind: FileType, perm: u16, parent: u64, req: &Request<'_>) -> Node {
        Node {
            kind,
            perm,
            uid: req.uid(),
            gid: req.gid(),
            mtime: SystemTime::now(),
            parent,
            data: Vec::new(),
            synced: Vec::new(),
            unsynced_write: None,
            children: BTreeMap::new(),
            synced_children: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
struct Tree {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
}

impl Tree {
    fn new() -> Tree {
        let root = Node {
            kind: FileType::Directory,
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime: SystemTime::now(),
            parent: FUSE_ROOT_ID,
            data: Vec::new(),
            synced: Vec::new(),
            unsynced_write: None,
            children: BTreeMap::new(),
            synced_children: BTreeMap::new(),
        };
        Tree { nodes: BTreeMap::from([(FUSE_ROOT_ID, root)]), next_ino: FUSE_ROOT_ID + 1 }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let size = node.data.len() as u64;
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind: node.kind,
            perm: node.perm,
            nlink: if node.kind == FileType::Directory { 2 } else { 1 },
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, i32> {
        let dir = self.nodes.get(&parent).ok_or(ENOENT)?;
        if dir.kind != FileType::Directory {
            return Err(ENOTDIR);
        }
        dir.children.get(name).copied().ok_or(ENOENT)
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, i32> {
        match self.child(parent, name) {
            Ok(_) => return Err(EEXIST),
            Err(ENOENT) => {}
            Err(e) => return Err(e),
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.nodes.get_mut(&parent).expect("checked").children.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Every change since the last sync is lost; with `tear`, one file keeps a random
    /// prefix of its last unsynced write. Returns the files reverted and whether one was
    /// torn.
    fn crash(&mut self, rng: &mut impl Rng, tear: bool) -> (usize, bool) {
        let torn_ino = if tear {
            let candidates: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.unsynced_write.is_some_and(|(_, len)| len > 1))
                .map(|(ino, _)| *ino)
                .collect();
            (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())])
        } else {
            None
        };
        let mut reverted = 0;
        for (ino, node) in &mut self.nodes {
            if node.data != node.synced {
                reverted += 1;
            }
            let mut data = node.synced.clone();
            if Some(*ino) == torn_ino {
                let (offset, len) = node.unsynced_write.expect("a candidate");
                let keep = rng.random_range(1..len);
                let end = (offset + keep).min(node.data.len());
                if data.len() < end {
                    data.resize(end, 0);
                }
                if offset < end {
                    data[offset..end].copy_from_slice(&node.data[offset..end]);
                }
            }
            node.data = data;
            node.unsynced_write = None;
            node.children = node.synced_children.clone();
        }
        // Drop what no directory names any more.
        let mut reachable = HashSet::from([FUSE_ROOT_ID]);
        let mut stack = vec![FUSE_ROOT_ID];
        while let Some(ino) = stack.pop() {
            for child in self.nodes[&ino].children.values() {
                if reachable.insert(*child) {
                    stack.push(*child);
                }
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
        (reverted, torn_ino.is_some())
    }
}

struct LossyFs {
    tree: Arc<Mutex<Tree>>,
}

impl LossyFs {
    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().expect("the tree lock")
    }

    /// Applies `change` to node `ino` and answers.
    fn change(&self, ino: u64, reply: ReplyEmpty, change: impl FnOnce(&mut Node)) {
        match self.tree().nodes.get_mut(&ino) {
            Some(node) => {
                change(node);
                reply.ok();
            }
            None => reply.error(ENOENT),
        }
    }
}

impl Filesystem for LossyFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let tree = self.tree();
        match tree.child(parent, name) {
            Ok(ino) => reply.entry(&TTL, &tree.attr(ino).expect("a child exists"), 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.tree().attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut tree = self.tree();
        let Some(node) = tree.nodes.get_mut(&ino) else { return reply.error(ENOENT) };
        if let Some(size) = size {
            if node.kind == FileType::Directory {
                return reply.error(EISDIR);
            }
            node.data.resize(size as usize, 0);
            node.mtime = SystemTime::now();
        }
        if let Some(mode) = mode {
            node.perm = (mode & 0o7777) as u16;
        }
        reply.attr(&TTL, &tree.attr(ino).expect("exists"));
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut tree = self.tree();
        let node = Node::new(FileType::Directory, (mode & 0o7777) as u16, parent, req);
        match tree.add(parent, name, node) {
            Ok(ino) => reply.entry(&TTL, &tree.attr(ino).expect("added"), 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut tree = self.tree();
        let ino = match tree.child(parent, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => return reply.error(EEXIST),
            Ok(ino) => {
                if flags & libc::O_TRUNC != 0 {
                    tree.nodes.get_mut(&ino).expect("exists").data.clear();
                }
                ino
            }
            Err(ENOENT) => {
                let node = Node::new(FileType::RegularFile, (mode & 0o7777) as u16, parent, req);
                match tree.add(parent, name, node) {
                    Ok(ino) => ino,
                    Err(e) => return reply.error(e),
                }
            }
            Err(e) => return reply.error(e),
        };
        let attr = tree.attr(ino).expect("exists");
        reply.created(&TTL, &attr, 0, 0, fuser::consts::FOPEN_DIRECT_IO);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut tree = self.tree();
        let Some(node) = tree.nodes.get_mut(&ino) else { return reply.error(ENOENT) };
        if flags & libc::O_TRUNC != 0 && node.kind == FileType::RegularFile {
            node.data.clear();
        }
        reply.opened(0, fuser::consts::FOPEN_DIRECT_IO);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let tree = self.tree();
        let Some(node) = tree.nodes.get(&ino) else { return reply.error(ENOENT) };
        let start = (offset.max(0) as usize).min(node.data.len());
        let end = (start + size as usize).min(node.data.len());
        reply.data(&node.data[start..end]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut tree = self.tree();
        let Some(node) = tree.nodes.get_mut(&ino) else { return reply.error(ENOENT) };
        let offset = offset.max(0) as usize;
        let end = offset + data.len();
        if node.data.len() < end {
            node.data.resize(end, 0);
        }
        node.data[offset..end].copy_from_slice(data);
        node.unsynced_write = Some((offset, data.len()));
        node.mtime = SystemTime::now();
        reply.written(data.len() as u32);
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.change(ino, reply, |node| {
            node.synced = node.data.clone();
            node.unsynced_write = None;
        });
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.change(ino, reply, |node| node.synced_children = node.children.clone());
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Space is not reserved in memory; only a size change is visible.
        self.change(ino, reply, |node| {
            let end = (offset + length).max(0) as usize;
            if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && node.data.len() < end {
                node.data.resize(end, 0);
            }
        });
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut tree = self.tree();
        match tree.child(parent, name) {
            Ok(ino) if tree.nodes[&ino].kind == FileType::Directory => reply.error(EISDIR),
            Ok(_) => {
                tree.nodes.get_mut(&parent).expect("exists").children.remove(name);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut tree = self.tree();
        match tree.child(parent, name) {
            Ok(ino) if tree.nodes[&ino].kind != FileType::Directory => reply.error(ENOTDIR),
            Ok(ino) if !tree.nodes[&ino].children.is_empty() => reply.error(ENOTEMPTY),
            Ok(_) => {
                tree.nodes.get_mut(&parent).expect("exists").children.remove(name);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut tree = self.tree();
        let ino = match tree.child(parent, name) {
            Ok(ino) => ino,
            Err(e) => return reply.error(e),
        };
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return reply.error(EINVAL);
        }
        match tree.child(newparent, newname) {
            Ok(_) if flags & libc::RENAME_NOREPLACE != 0 => return reply.error(EEXIST),
            Ok(target) if tree.nodes[&target].kind == FileType::Directory => {
                return reply.error(EISDIR)
            }
            Ok(_) | Err(ENOENT) => {}
            Err(e) => return reply.error(e),
        }
        tree.nodes.get_mut(&parent).expect("exists").children.remove(name);
        tree.nodes.get_mut(&newparent).expect("exists").children.insert(newname.to_owned(), ino);
        tree.nodes.get_mut(&ino).expect("exists").parent = newparent;
        reply.ok();
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.tree();
        let Some(dir) = tree.nodes.get(&ino) else { return reply.error(ENOENT) };
        let mut entries: Vec<(u64, FileType, OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (dir.parent, FileType::Directory, "..".into()),
        ];
        for (name, child) in &dir.children {
            entries.push((*child, tree.nodes[child].kind, name.clone()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // Plenty of room: a power cut, not a full disk, is what this file system models.
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }
}

fn main() -> anyhow::Result<()> {
    let mountpoint =
        std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: lossyfs MOUNTPOINT"))?;
    let tree = Arc::new(Mutex::new(Tree::new()));
    let options = [MountOption::FSName("lossyfs".into()), MountOption::RW];
    let session = fuser::spawn_mount2(LossyFs { tree: tree.clone() }, &mountpoint, &options)
        .map_err(|e| anyhow::anyhow!("mounting lossyfs on {mountpoint}: {e}"))?;
    println!("mounted");
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["crash", seed, tear] => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed.parse()?);
                let (files, torn) =
                    tree.lock().expect("the tree lock").crash(&mut rng, *tear == "1");
                println!("crashed {files} {torn}");
            }
            ["exit"] => break,
            other => anyhow::bail!("unknown command {other:?}"),
        }
    }
    drop(session);
    Ok(())
}
