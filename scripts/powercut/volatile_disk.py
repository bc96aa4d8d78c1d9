"""A disk with a volatile write cache, for the power-cut VM.

qemu writes to a raw image with O_DIRECT (`cache=none`): every write it completes is on the
host's storage, so killing qemu never loses a write the guest saw complete, flushed or not.
A real SD card, eMMC or disk keeps completed writes in a volatile cache until the host asks
for a flush (or writes with FUA), and a power cut loses any part of that cache.

`VolatileDisk` serves an image to qemu over NBD on a unix socket and keeps that cache: a
write waits in memory, in 4 KiB blocks, until a flush (or a FUA write) puts it on the image;
reads see the cache. A flush takes `FLUSH_SECONDS`, as a card's does, so a cut often comes
while an fsync waits. `lose_power()` ends the disk as a cut ends a device: each cached block
reaches the image or not, at random. A write whose flush completed is never lost.

Only what qemu's NBD client (7.2) uses: fixed newstyle negotiation, NBD_OPT_GO / INFO /
EXPORT_NAME, simple replies, READ, WRITE (with FUA), FLUSH and DISC.
"""

import os
import shutil
import socket
import struct
import tempfile
import threading
import time

BLOCK = 4096  # what a cut keeps or loses: a device's atomic write unit
SECTOR = 512
FLUSH_SECONDS = 0.004

IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_INFO, OPT_GO = 1, 2, 6, 7
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, 0x80000001
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3
TX_HAS_FLAGS, TX_SEND_FLUSH, TX_SEND_FUA = 1, 4, 8
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
CMD_FLAG_FUA = 1
EINVAL = 22


class VolatileDisk:
    def __init__(self, image):
        self.image = str(image)
        # A unix socket's path has at most 107 bytes: not under a checkout that may be deep.
        self.socket_dir = tempfile.mkdtemp(prefix="powercut-disk-")
        self.socket_path = os.path.join(self.socket_dir, "nbd.sock")
        self.size = os.path.getsize(self.image)
        self.cache = {}  # block number -> bytearray(BLOCK): the block as the guest last wrote it
        self.flushes = 0
        self.powered = True  # until lose_power: then nothing more reaches the image
        self.lock = threading.Lock()
        self.fd = os.open(self.image, os.O_RDWR)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.socket_path)
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def qemu_drive(self):
        """The -drive argument: qemu's own cache off, the guest told there is a write cache."""
        return f"file=nbd+unix:///?socket={self.socket_path},format=raw,if=virtio,cache=writeback"

    def cut_power(self):
        """The cut: from now on nothing reaches the image, not even a flush qemu has sent."""
        with self.lock:
            self.powered = False

    def lose_power(self, rng, keep=0.5):
        """After the cut: each cached block reaches the image with probability `keep`, then
        the disk is gone. Returns (blocks kept, blocks lost)."""
        with self.lock:
            self.powered = False
            blocks = sorted(self.cache)
            kept = [b for b in blocks if rng.random() < keep]
            for b in kept:
                os.pwrite(self.fd, self.cache[b], b * BLOCK)
            lost = len(blocks) - len(kept)
            self.cache.clear()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() if qemu never came
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=30)
        os.close(self.fd)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        return len(kept), lost

    # -- the cache --------------------------------------------------------------------------

    def _block(self, b):
        """Block b as the guest sees it (cache, else image); the caller holds the lock."""
        cached = self.cache.get(b)
        if cached is not None:
            return bytes(cached)
        data = os.pread(self.fd, BLOCK, b * BLOCK)
        return data + bytes(BLOCK - len(data))

    def read(self, offset, length):
        with self.lock:
            out = bytearray()
            for b in range(offset // BLOCK, (offset + length + BLOCK - 1) // BLOCK):
                out += self._block(b)
            start = offset % BLOCK
            return bytes(out[start : start + length])

    def write(self, offset, data, fua):
        with self.lock:
            if not self.powered:
                raise ConnectionError("power lost")
            at = 0
            while at < len(data):
                b, within = divmod(offset + at, BLOCK)
                n = min(BLOCK - within, len(data) - at)
                block = self.cache.get(b)
                if block is None:
                    block = bytearray(self._block(b))
                block[within : within + n] = data[at : at + n]
                if fua:
                    os.pwrite(self.fd, block, b * BLOCK)
                    self.cache.pop(b, None)
                else:
                    self.cache[b] = block
                at += n

    def flush(self):
        time.sleep(FLUSH_SECONDS)
        with self.lock:
            if not self.powered:
                raise ConnectionError("power lost during the flush")
            for b, block in sorted(self.cache.items()):
                os.pwrite(self.fd, block, b * BLOCK)
            self.cache.clear()
            self.flushes += 1

    # -- NBD ----------------------------------------------------------------------------------

    def _serve(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return  # closed before qemu connected
        with conn:
            try:
                if self._negotiate(conn):
                    self._transmit(conn)
            except (OSError, ConnectionError, struct.error):
                pass  # qemu killed: the cut

    def _negotiate(self, conn):
        conn.sendall(b"NBDMAGIC" + struct.pack(">QH", IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        (client_flags,) = struct.unpack(">I", _recv(conn, 4))
        while True:
            magic, option, length = struct.unpack(">QII", _recv(conn, 16))
            if magic != IHAVEOPT:
                return False
            data = _recv(conn, length)
            if option == OPT_EXPORT_NAME:
                tail = b"" if client_flags & FLAG_NO_ZEROES else bytes(124)
                conn.sendall(struct.pack(">QH", self.size, self._tx_flags()) + tail)
                return True
            if option in (OPT_INFO, OPT_GO):
                export = struct.pack(">HQH", INFO_EXPORT, self.size, self._tx_flags())
                self._reply(conn, option, REP_INFO, export)
                sizes = struct.pack(">HIII", INFO_BLOCK_SIZE, SECTOR, BLOCK, 32 << 20)
                self._reply(conn, option, REP_INFO, sizes)
                self._reply(conn, option, REP_ACK)
                if option == OPT_GO:
                    return True
            elif option == OPT_ABORT:
                self._reply(conn, option, REP_ACK)
                return False
            else:
                self._reply(conn, option, REP_ERR_UNSUP)

    @staticmethod
    def _tx_flags():
        return TX_HAS_FLAGS | TX_SEND_FLUSH | TX_SEND_FUA

    @staticmethod
    def _reply(conn, option, kind, data=b""):
        conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, kind, len(data)) + data)

    def _transmit(self, conn):
        while True:
            magic, flags, kind, handle, offset, length = struct.unpack(">IHHQQI", _recv(conn, 28))
            if magic != REQUEST_MAGIC:
                return
            if kind == CMD_DISC:
                return
            payload = _recv(conn, length) if kind == CMD_WRITE else b""
            error, data = 0, b""
            if offset + length > self.size and kind in (CMD_READ, CMD_WRITE):
                error = EINVAL
            elif kind == CMD_READ:
                data = self.read(offset, length)
            elif kind == CMD_WRITE:
                self.write(offset, payload, bool(flags & CMD_FLAG_FUA))
            elif kind == CMD_FLUSH:
                self.flush()
            else:
                error = EINVAL
            conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, handle) + data)


def _recv(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("qemu went away")
        buf += chunk
    return bytes(buf)
