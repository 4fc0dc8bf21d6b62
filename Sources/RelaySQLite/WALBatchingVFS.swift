import CSQLite
import Foundation

/// An SQLite VFS over the default one ("unix") that writes a transaction's WAL frames with one `pwrite` instead of
/// two per frame. SQLite writes each frame as two calls, its 24-byte header and then its page; the store's writer
/// commits about 24 frames per group commit, and each write is a system call that takes the inode lock and walks the
/// page cache (on this project's machines: 2.6 µs per frame as two writes, 0.6 µs as part of one).
///
/// Only the WAL file is buffered, and only its appends: a frame's bytes are copied into the buffer, and the buffer
/// is written in one call when the commit's last frame is complete (the frame header whose commit field is set, then
/// its page), before SQLite publishes the commit in the WAL index, so that no other connection can read a frame that
/// is not in the file yet, and an error (a full disk) is the commit's error. Anything else that reads, syncs, sizes or
/// rewrites the WAL, or a write that does not follow the buffer (SQLite rewriting frames of the transaction in place,
/// or the WAL header when the log starts over), writes the buffer first and then goes through unchanged. Every other
/// file (the database, temporary files) goes straight to the default VFS. Durability is unchanged: the bytes are in
/// the page cache when the commit returns, as before, and the store's flush thread fdatasyncs them before any answer.
///
/// Used by the store's writer connection only (`SQLiteStore`); each buffer is touched only by its connection's thread.
enum WALBatchingVFS {
    static let name = "relay-wal-batch"

    /// Registers the VFS once per process; nil when it could not be (the connection then uses the default VFS).
    static let registered: String? = {
        guard let base = sqlite3_vfs_find(nil) else { return nil }
        let context = Context(base: base)
        let vfs = UnsafeMutablePointer<sqlite3_vfs>.allocate(capacity: 1)
        vfs.initialize(to: base.pointee)   // xDelete, xAccess, xFullPathname, time, randomness: the default's own
        vfs.pointee.iVersion = min(base.pointee.iVersion, 2)
        vfs.pointee.pNext = nil
        vfs.pointee.szOsFile = Int32(headerSize) + base.pointee.szOsFile
        vfs.pointee.zName = UnsafePointer(strdup(name))
        vfs.pointee.pAppData = Unmanaged.passRetained(context).toOpaque()
        vfs.pointee.xOpen = relayVFSOpen
        guard sqlite3_vfs_register(vfs, 0) == SQLITE_OK else { return nil }
        return name
    }()

    /// For tests and diagnosis: of the WAL of `db`'s main database, the writes that waited in its buffer and those
    /// that reached the default VFS (a buffer written out, or a write that went through); nil when the WAL is not
    /// open or not this VFS's.
    static func counts(_ db: Database) -> (buffered: Int, written: Int)? {
        var file: UnsafeMutablePointer<sqlite3_file>?
        guard sqlite3_file_control(db.handle, "main", SQLITE_FCNTL_JOURNAL_POINTER, &file) == SQLITE_OK,
              let file, let methods = file.pointee.pMethods, registered != nil,
              let vfs = sqlite3_vfs_find(name), let app = vfs.pointee.pAppData,
              methods == UnsafePointer(Unmanaged<Context>.fromOpaque(app).takeUnretainedValue().methods),
              let b = buffer(file) else { return nil }
        return (b.buffered, b.written)
    }

    /// Our part of a file, rounded up so that the default VFS's file after it is aligned.
    static let headerSize = (MemoryLayout<relay_vfs_file>.size + 15) & ~15

    final class Context {
        let base: UnsafeMutablePointer<sqlite3_vfs>
        let methods: UnsafeMutablePointer<sqlite3_io_methods>

        init(base: UnsafeMutablePointer<sqlite3_vfs>) {
            self.base = base
            methods = .allocate(capacity: 1)
            methods.initialize(to: sqlite3_io_methods(
                iVersion: 3, xClose: relayFileClose, xRead: relayFileRead, xWrite: relayFileWrite,
                xTruncate: relayFileTruncate, xSync: relayFileSync, xFileSize: relayFileSize, xLock: relayFileLock,
                xUnlock: relayFileUnlock, xCheckReservedLock: relayFileCheckReservedLock,
                xFileControl: relayFileControl, xSectorSize: relayFileSectorSize,
                xDeviceCharacteristics: relayFileDeviceCharacteristics, xShmMap: relayFileShmMap,
                xShmLock: relayFileShmLock, xShmBarrier: relayFileShmBarrier, xShmUnmap: relayFileShmUnmap,
                xFetch: relayFileFetch, xUnfetch: relayFileUnfetch))
        }
    }

    /// The pending appends of one WAL file: `count` bytes from file offset `start`.
    final class Buffer {
        private(set) var bytes: UnsafeMutableRawPointer
        private var capacity: Int
        private(set) var count = 0
        private(set) var start: Int64 = 0
        /// Where the log ends, as far as this connection has written it: a write before it rewrites.
        private(set) var end: Int64 = 0
        /// A commit frame's header is in the buffer: its page completes the commit.
        private var commitPending = false
        /// Appends are written once the buffer holds this much, commit or not (a large transaction).
        static let limit = 1 << 20
        /// Counts (`WALBatchingVFS.counts`): writes buffered, and writes that reached the default VFS.
        private(set) var buffered = 0
        private(set) var written = 0

        init() {
            capacity = 256 << 10
            bytes = .allocate(byteCount: capacity, alignment: 16)
        }

        deinit { bytes.deallocate() }

        /// Whether a write at `offset` is an append that can wait in the buffer: it follows what is buffered, or,
        /// with nothing buffered, it is past the log's header and not before the log's end (not a rewrite).
        func accepts(offset: Int64) -> Bool {
            count > 0 ? offset == start + Int64(count) : (offset >= end && offset >= 32)
        }

        /// Appends a write `accepts` took; true when the buffer must be written now.
        func append(_ data: UnsafeRawPointer, _ amount: Int, at offset: Int64) -> Bool {
            if count == 0 { start = offset }
            if count + amount > capacity {
                var grown = capacity
                while grown < count + amount { grown *= 2 }
                let b = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 16)
                b.copyMemory(from: bytes, byteCount: count)
                bytes.deallocate()
                bytes = b
                capacity = grown
            }
            (bytes + count).copyMemory(from: data, byteCount: amount)
            count += amount
            end = max(end, offset + Int64(amount))
            buffered += 1
            if amount == 24 {
                // A frame header: bytes 4-7 (big-endian) are the database's size after the commit, or 0.
                let p = data.assumingMemoryBound(to: UInt8.self)
                if p[4] | p[5] | p[6] | p[7] != 0 {
                    commitPending = true
                    return false
                }
            }
            return commitPending || count >= Self.limit
        }

        /// Writes what is buffered through `real`: one call, or one per 128 KiB (the unix VFS writes at most
        /// 0x1ffff bytes per call and reports a shorter write as a full disk). On failure nothing of it is kept: it
        /// belonged to the transaction that fails with this error.
        func flush(_ real: UnsafeMutablePointer<sqlite3_file>) -> Int32 {
            guard count > 0 else { return SQLITE_OK }
            var done = 0
            var rc = SQLITE_OK
            while done < count && rc == SQLITE_OK {
                let n = min(count - done, Self.largestWrite)
                rc = real.pointee.pMethods.pointee.xWrite!(real, bytes + done, Int32(n), start + Int64(done))
                written += 1
                done += n
            }
            count = 0
            commitPending = false
            return rc
        }

        /// The most the default VFS writes in one call (`seekAndWriteFd` in os_unix.c masks the size to 17 bits).
        static let largestWrite = 0x1ffff

        /// A write that goes through as it is (a rewrite, the log's header): where the log now ends.
        func wroteThrough(offset: Int64, amount: Int) {
            written += 1
            if offset == 0 {
                end = Int64(amount)   // the header of a log that starts over: frames follow it
            } else {
                end = max(end, offset + Int64(amount))
            }
        }
    }
}

// The VFS's C callbacks: plain functions over the file's header (no captures).

private func header(_ f: UnsafeMutablePointer<sqlite3_file>?) -> UnsafeMutablePointer<relay_vfs_file> {
    UnsafeMutableRawPointer(f!).assumingMemoryBound(to: relay_vfs_file.self)
}

private func real(_ f: UnsafeMutablePointer<sqlite3_file>?) -> UnsafeMutablePointer<sqlite3_file> {
    header(f).pointee.real
}

private func methods(_ f: UnsafeMutablePointer<sqlite3_file>?) -> sqlite3_io_methods {
    real(f).pointee.pMethods.pointee
}

private func buffer(_ f: UnsafeMutablePointer<sqlite3_file>?) -> WALBatchingVFS.Buffer? {
    header(f).pointee.state.map { Unmanaged<WALBatchingVFS.Buffer>.fromOpaque($0).takeUnretainedValue() }
}

/// Writes a WAL file's buffer, if it has one, before an operation that must see the file as written.
private func settle(_ f: UnsafeMutablePointer<sqlite3_file>?) -> Int32 {
    buffer(f)?.flush(real(f)) ?? SQLITE_OK
}

private let relayVFSOpen: @convention(c) (UnsafeMutablePointer<sqlite3_vfs>?, UnsafePointer<CChar>?,
                                          UnsafeMutablePointer<sqlite3_file>?, Int32, UnsafeMutablePointer<Int32>?) -> Int32 = {
    vfs, name, file, flags, outFlags in
    let context = Unmanaged<WALBatchingVFS.Context>.fromOpaque(vfs!.pointee.pAppData).takeUnretainedValue()
    let h = header(file)
    let inner = (UnsafeMutableRawPointer(file!) + WALBatchingVFS.headerSize).assumingMemoryBound(to: sqlite3_file.self)
    h.pointee.base.pMethods = nil
    h.pointee.real = inner
    h.pointee.state = nil
    let rc = context.base.pointee.xOpen!(context.base, name, inner, flags, outFlags)
    guard rc == SQLITE_OK, inner.pointee.pMethods != nil else { return rc }
    if flags & SQLITE_OPEN_WAL != 0 && inner.pointee.pMethods.pointee.iVersion >= 3 {
        h.pointee.state = Unmanaged.passRetained(WALBatchingVFS.Buffer()).toOpaque()
    }
    h.pointee.base.pMethods = UnsafePointer(context.methods)
    return SQLITE_OK
}

private let relayFileClose: @convention(c) (UnsafeMutablePointer<sqlite3_file>?) -> Int32 = { f in
    let flushed = settle(f)
    let rc = methods(f).xClose!(real(f))
    if let state = header(f).pointee.state {
        Unmanaged<WALBatchingVFS.Buffer>.fromOpaque(state).release()
        header(f).pointee.state = nil
    }
    return flushed != SQLITE_OK ? flushed : rc
}

private let relayFileRead: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, UnsafeMutableRawPointer?, Int32, sqlite3_int64) -> Int32 = {
    f, data, amount, offset in
    let rc = settle(f)
    if rc != SQLITE_OK { return rc }
    return methods(f).xRead!(real(f), data, amount, offset)
}

private let relayFileWrite: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, UnsafeRawPointer?, Int32, sqlite3_int64) -> Int32 = {
    f, data, amount, offset in
    guard let b = buffer(f), let data else { return methods(f).xWrite!(real(f), data, amount, offset) }
    if b.accepts(offset: offset) {
        return b.append(data, Int(amount), at: offset) ? b.flush(real(f)) : SQLITE_OK
    }
    let rc = b.flush(real(f))
    if rc != SQLITE_OK { return rc }
    b.wroteThrough(offset: offset, amount: Int(amount))
    return methods(f).xWrite!(real(f), data, amount, offset)
}

private let relayFileTruncate: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, sqlite3_int64) -> Int32 = { f, size in
    let rc = settle(f)
    if rc != SQLITE_OK { return rc }
    return methods(f).xTruncate!(real(f), size)
}

private let relayFileSync: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, Int32) -> Int32 = { f, flags in
    let rc = settle(f)
    if rc != SQLITE_OK { return rc }
    return methods(f).xSync!(real(f), flags)
}

private let relayFileSize: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, UnsafeMutablePointer<sqlite3_int64>?) -> Int32 = { f, size in
    let rc = settle(f)
    if rc != SQLITE_OK { return rc }
    return methods(f).xFileSize!(real(f), size)
}

private let relayFileLock: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, Int32) -> Int32 = { f, level in
    methods(f).xLock!(real(f), level)
}

private let relayFileUnlock: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, Int32) -> Int32 = { f, level in
    methods(f).xUnlock!(real(f), level)
}

private let relayFileCheckReservedLock: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, UnsafeMutablePointer<Int32>?) -> Int32 = {
    f, out in
    methods(f).xCheckReservedLock!(real(f), out)
}

private let relayFileControl: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, Int32, UnsafeMutableRawPointer?) -> Int32 = {
    f, op, arg in
    let rc = settle(f)
    if rc != SQLITE_OK { return rc }
    return methods(f).xFileControl!(real(f), op, arg)
}

private let relayFileSectorSize: @convention(c) (UnsafeMutablePointer<sqlite3_file>?) -> Int32 = { f in
    methods(f).xSectorSize!(real(f))
}

private let relayFileDeviceCharacteristics: @convention(c) (UnsafeMutablePointer<sqlite3_file>?) -> Int32 = { f in
    methods(f).xDeviceCharacteristics!(real(f))
}

private let relayFileShmMap: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, Int32, Int32, Int32,
                                             UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 = {
    f, region, size, extend, out in
    guard let m = methods(f).xShmMap else { return SQLITE_IOERR }
    return m(real(f), region, size, extend, out)
}

private let relayFileShmLock: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, Int32, Int32, Int32) -> Int32 = {
    f, offset, n, flags in
    guard let m = methods(f).xShmLock else { return SQLITE_IOERR }
    return m(real(f), offset, n, flags)
}

private let relayFileShmBarrier: @convention(c) (UnsafeMutablePointer<sqlite3_file>?) -> Void = { f in
    methods(f).xShmBarrier?(real(f))
}

private let relayFileShmUnmap: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, Int32) -> Int32 = { f, delete in
    guard let m = methods(f).xShmUnmap else { return SQLITE_OK }
    return m(real(f), delete)
}

private let relayFileFetch: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, sqlite3_int64, Int32,
                                            UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 = {
    f, offset, amount, out in
    guard let m = methods(f).xFetch else { out?.pointee = nil; return SQLITE_OK }
    return m(real(f), offset, amount, out)
}

private let relayFileUnfetch: @convention(c) (UnsafeMutablePointer<sqlite3_file>?, sqlite3_int64, UnsafeMutableRawPointer?) -> Int32 = {
    f, offset, p in
    guard let m = methods(f).xUnfetch else { return SQLITE_OK }
    return m(real(f), offset, p)
}


