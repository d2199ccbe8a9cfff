#!/usr/bin/python3
"""A FUSE file system that forgets, at a power cut, every write that was not fsynced.

    powercut_fs.py BACKING_DIR MOUNT_POINT

What is durable lives in BACKING_DIR: `ns.json` (the durable names: path -> inode) and
`data/<inode>` (each inode's durable bytes). What is not yet durable lives only in this
process's memory: file pages written since the file's last fsync, and names created,
renamed or removed since their directory's last fsync. A power cut is SIGKILL of this
process (and of everything using the mount): what it held in memory is gone, and the next
mount shows exactly the durable state.

The model is the strict POSIX one that makes programs write durably:
- fsync/fdatasync of a file (or a write through an O_SYNC/O_DSYNC descriptor) makes its
  bytes durable, under whatever names its directory has durably;
- fsync of a directory makes its current entries (names -> inodes) durable;
- a file created, written and renamed into place without those comes back empty, or not
  at all. Directories are durable once made (a simplification: tests make data dirs
  before the first cut).

Single-threaded on purpose: operations are applied one at a time, in order.
"""
import errno
import json
import os
import stat
import sys
import time

from fusepy import FUSE, FuseOSError, Operations

PAGE = 4096


class Inode:
    def __init__(self, ino, is_dir, mode, durable_path):
        self.ino = ino
        self.is_dir = is_dir
        self.mode = mode
        self.path = durable_path  # data/<ino>: its durable bytes
        self.dirty = {}  # page index -> bytearray(PAGE), written since the last fsync
        self.size = os.path.getsize(durable_path) if (durable_path and os.path.exists(durable_path)) else 0
        self.low = self.size  # lowest size since the last fsync: durable bytes past it are gone
        self.mtime = time.time()

    def durable_page(self, p):
        buf = bytearray(PAGE)
        start = p * PAGE
        if start < self.low:
            with open(self.path, 'rb') as f:
                f.seek(start)
                got = f.read(min(PAGE, self.low - start))
            buf[: len(got)] = got
        return buf

    def read(self, size, offset):
        end = min(offset + size, self.size)
        out = bytearray()
        pos = offset
        while pos < end:
            p = pos // PAGE
            page = self.dirty.get(p)
            if page is None:
                page = self.durable_page(p)
            a = pos - p * PAGE
            b = min(PAGE, end - p * PAGE)
            out += page[a:b]
            pos = p * PAGE + b
        return bytes(out)

    def write(self, data, offset):
        pos = offset
        i = 0
        while i < len(data):
            p = pos // PAGE
            page = self.dirty.get(p)
            if page is None:
                page = self.dirty[p] = self.durable_page(p)
            a = pos - p * PAGE
            n = min(PAGE - a, len(data) - i)
            page[a : a + n] = data[i : i + n]
            i += n
            pos += n
        self.size = max(self.size, offset + len(data))
        self.mtime = time.time()
        return len(data)

    def truncate(self, length):
        if length < self.size:
            for p in [p for p in self.dirty if p * PAGE >= length]:
                del self.dirty[p]
            last = length // PAGE
            if last in self.dirty:
                self.dirty[last][length - last * PAGE :] = bytes(PAGE - (length - last * PAGE))
            self.low = min(self.low, length)
        self.size = length
        self.mtime = time.time()

    def sync(self):
        """Makes the live bytes durable."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, min(self.low, self.size))
            os.ftruncate(fd, self.size)
            for p, page in sorted(self.dirty.items()):
                n = min(PAGE, self.size - p * PAGE)
                if n > 0:
                    os.pwrite(fd, bytes(page[:n]), p * PAGE)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.dirty.clear()
        self.low = self.size


class PowerCutFs(Operations):
    def __init__(self, backing):
        self.backing = backing
        self.data_dir = os.path.join(backing, 'data')
        os.makedirs(self.data_dir, exist_ok=True)
        self.ns_path = os.path.join(backing, 'ns.json')
        durable = {'/': {'ino': 1, 'dir': True, 'mode': 0o40755}}
        if os.path.exists(self.ns_path):
            with open(self.ns_path) as f:
                durable = json.load(f)
        self.durable = durable  # path -> {ino, dir, mode}
        self.inodes = {}
        self.ns = {}
        for path, e in durable.items():
            if e['ino'] not in self.inodes:
                self.inodes[e['ino']] = Inode(e['ino'], e['dir'], e['mode'], None if e['dir'] else self.data_file(e['ino']))
            self.ns[path] = e['ino']
        self.next_ino = max([e['ino'] for e in durable.values()] + [1]) + 1
        # Durable bytes of inodes no name refers to any more are garbage.
        live = {str(i) for i in self.inodes}
        for name in os.listdir(self.data_dir):
            if name not in live:
                os.unlink(os.path.join(self.data_dir, name))
        self.fhs = {}
        self.next_fh = 1

    def data_file(self, ino):
        return os.path.join(self.data_dir, str(ino))

    def save_durable(self):
        tmp = self.ns_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.durable, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.ns_path)
        fd = os.open(self.backing, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def node(self, path):
        ino = self.ns.get(path)
        if ino is None:
            raise FuseOSError(errno.ENOENT)
        return self.inodes[ino]

    def children(self, path):
        prefix = path.rstrip('/') + '/'
        return [p for p in self.ns if p != '/' and p.startswith(prefix) and '/' not in p[len(prefix) :]]

    def parent_must_be_dir(self, path):
        parent = os.path.dirname(path)
        if not self.node(parent).is_dir:
            raise FuseOSError(errno.ENOTDIR)

    def new_inode(self, is_dir, mode):
        ino = self.next_ino
        self.next_ino += 1
        inode = Inode(ino, is_dir, mode, None if is_dir else self.data_file(ino))
        self.inodes[ino] = inode
        return inode

    # -- attributes ------------------------------------------------------------------------

    def getattr(self, path, fh=None):
        n = self.node(path)
        links = sum(1 for i in self.ns.values() if i == n.ino)
        return {
            'st_mode': n.mode,
            'st_nlink': links + (1 if n.is_dir else 0),
            'st_size': 4096 if n.is_dir else n.size,
            'st_blocks': (n.size + 511) // 512,
            'st_uid': os.getuid(),
            'st_gid': os.getgid(),
            'st_atime': n.mtime,
            'st_mtime': n.mtime,
            'st_ctime': n.mtime,
            'st_ino': n.ino,
        }

    def chmod(self, path, mode):
        n = self.node(path)
        n.mode = (n.mode & ~0o7777) | (mode & 0o7777)
        return 0

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        self.node(path).mtime = time.time()
        return 0

    def statfs(self, path):
        s = os.statvfs(self.backing)
        return {k: getattr(s, k) for k in ('f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail', 'f_ffree', 'f_files', 'f_flag', 'f_frsize', 'f_namemax')}

    def access(self, path, amode):
        self.node(path)
        return 0

    # -- names ---------------------------------------------------------------------------

    def readdir(self, path, fh):
        if not self.node(path).is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return ['.', '..'] + [os.path.basename(p) for p in self.children(path)]

    def mkdir(self, path, mode):
        if path in self.ns:
            raise FuseOSError(errno.EEXIST)
        self.parent_must_be_dir(path)
        n = self.new_inode(True, stat.S_IFDIR | (mode & 0o7777))
        self.ns[path] = n.ino
        self.durable[path] = {'ino': n.ino, 'dir': True, 'mode': n.mode}
        self.save_durable()
        return 0

    def rmdir(self, path):
        n = self.node(path)
        if not n.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        if self.children(path):
            raise FuseOSError(errno.ENOTEMPTY)
        del self.ns[path]
        return 0

    def create(self, path, mode, fi=None):
        self.parent_must_be_dir(path)
        if path in self.ns:
            n = self.node(path)
            n.truncate(0)
        else:
            n = self.new_inode(False, stat.S_IFREG | (mode & 0o7777))
            self.ns[path] = n.ino
        return self.new_fh(n, os.O_WRONLY)

    def unlink(self, path):
        n = self.node(path)
        if n.is_dir:
            raise FuseOSError(errno.EISDIR)
        del self.ns[path]
        return 0

    def rename(self, old, new):
        n = self.node(old)
        self.parent_must_be_dir(new)
        if new in self.ns:
            target = self.node(new)
            if target.is_dir and self.children(new):
                raise FuseOSError(errno.ENOTEMPTY)
        moved = {p: i for p, i in self.ns.items() if p == old or p.startswith(old.rstrip('/') + '/')} if n.is_dir else {old: n.ino}
        for p in moved:
            del self.ns[p]
        for p, i in moved.items():
            self.ns[new + p[len(old) :]] = i
        return 0

    def link(self, target, source):
        # fusepy passes (new name, existing name)
        n = self.node(source)
        if target in self.ns:
            raise FuseOSError(errno.EEXIST)
        self.parent_must_be_dir(target)
        self.ns[target] = n.ino
        return 0

    # -- data ----------------------------------------------------------------------------

    def new_fh(self, inode, flags):
        fh = self.next_fh
        self.next_fh += 1
        self.fhs[fh] = (inode, bool(flags & (os.O_SYNC | os.O_DSYNC)))
        return fh

    def open(self, path, flags):
        n = self.node(path)
        if flags & os.O_TRUNC:
            n.truncate(0)
        return self.new_fh(n, flags)

    def opendir(self, path):
        if not self.node(path).is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return 0

    def read(self, path, size, offset, fh):
        inode, _ = self.fhs.get(fh) or (self.node(path), False)
        return inode.read(size, offset)

    def write(self, path, data, offset, fh):
        inode, sync = self.fhs.get(fh) or (self.node(path), False)
        n = inode.write(data, offset)
        if sync:
            inode.sync()
        return n

    def truncate(self, path, length, fh=None):
        inode = self.fhs[fh][0] if fh in self.fhs else self.node(path)
        inode.truncate(length)
        return 0

    def flush(self, path, fh):
        return 0  # close() makes nothing durable

    def release(self, path, fh):
        self.fhs.pop(fh, None)
        return 0

    def fsync(self, path, datasync, fh):
        inode = self.fhs[fh][0] if fh in self.fhs else self.node(path)
        inode.sync()
        return 0

    def fsyncdir(self, path, datasync, fh):
        """The directory's current entries become its durable ones."""
        prefix = path.rstrip('/') + '/'
        for p in [p for p in self.durable if p != '/' and p.startswith(prefix) and '/' not in p[len(prefix) :] and not self.durable[p]['dir']]:
            del self.durable[p]
        for p in self.children(path):
            n = self.inodes[self.ns[p]]
            if n.is_dir:
                continue
            if not os.path.exists(n.path):
                open(n.path, 'wb').close()  # a durable name for bytes never synced: empty
            self.durable[p] = {'ino': n.ino, 'dir': False, 'mode': n.mode}
        self.save_durable()
        return 0


if __name__ == '__main__':
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(PowerCutFs(backing), mountpoint, foreground=True, nothreads=True, fsname='powercut')
