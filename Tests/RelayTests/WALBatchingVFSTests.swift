import Foundation
import Relay
@testable import RelaySQLite
import Testing

/// The writer's VFS (`WALBatchingVFS`): a commit's WAL frames in one write, on real files, read back by connections
/// on SQLite's default VFS, and by SQLite's own recovery from a copy of the files (which checks every frame's
/// checksum and drops the log from the first bad one).
@Suite("WAL-batching VFS", .serialized)
struct WALBatchingVFSTests {
    /// A writer on the VFS and a reader on the default one, on a new WAL database with one table.
    static func open(_ dir: TempDir) throws -> (writer: Database, reader: Database, path: String) {
        let path = dir.path + "/wal.db"
        let vfs = try #require(WALBatchingVFS.registered)
        let writer = try Database(path: path, vfs: vfs)
        try writer.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0")
        try writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE, v TEXT NOT NULL)")
        let reader = try Database(path: path)
        return (writer, reader, path)
    }

    static func count(_ db: Database, _ sql: String = "SELECT count(*) || ':' || coalesce(sum(length(v)), 0) FROM t") throws -> String {
        try db.scalarText(sql) ?? ""
    }

    @Test("each commit is in the file, whole, before another connection can see it; its frames go out in one write")
    func commitsVisibleAndBatched() throws {
        let dir = try TempDir("wal-vfs")
        let (writer, reader, _) = try Self.open(dir)
        var rows = 0
        for txn in 0..<40 {
            try writer.execute("BEGIN IMMEDIATE")
            for i in 0..<8 {
                let s = try writer.statement("INSERT INTO t (k, v) VALUES (?, ?)")
                try s.bind(["k-\(txn)-\(i)", String(repeating: "v\(txn % 10)", count: 700)])
                try s.step()
                s.reset()
                rows += 1
            }
            try writer.execute("COMMIT")
            // The reader (default VFS, its own descriptor) sees every row of the commit at once.
            #expect(try Self.count(reader) == "\(rows):\(rows * 1400)")
        }
        #expect(try reader.scalarText("PRAGMA integrity_check") == "ok")
        let (buffered, written) = try #require(WALBatchingVFS.counts(writer))
        #expect(WALBatchingVFS.counts(reader) == nil)   // the default VFS's
        // Each commit writes a few frames (two writes each through SQLite): buffered, then one write per commit
        // (plus the log's header once).
        #expect(buffered >= 40 * 2 * 3, "\(buffered) buffered")
        #expect(written <= 40 + 2, "\(written) writes reached the file for 40 commits (\(buffered) buffered)")
    }

    @Test("a commit larger than one write of the default VFS (128 KiB) and than the buffer (1 MiB) is written whole")
    func largeCommit() throws {
        let dir = try TempDir("wal-vfs-large")
        let (writer, reader, _) = try Self.open(dir)
        try writer.execute("BEGIN IMMEDIATE")
        let big = String(repeating: "0123456789abcdef", count: 1024)   // 16 KiB per row
        for i in 0..<200 {                                               // about 3.2 MiB in one transaction
            let s = try writer.statement("INSERT INTO t (k, v) VALUES (?, ?)")
            try s.bind(["big-\(i)", big])
            try s.step()
            s.reset()
        }
        try writer.execute("COMMIT")
        #expect(try Self.count(reader) == "200:\(200 * 16384)")
        #expect(try reader.scalarText("SELECT count(*) FROM t WHERE v <> '\(big)'") == "0")
        #expect(try reader.scalarText("PRAGMA integrity_check") == "ok")
    }

    @Test("pages spilled before the commit and rewritten in place: the log recovers from a copy with every commit")
    func spilledTransactionRecovers() throws {
        let dir = try TempDir("wal-vfs-spill")
        let (writer, reader, path) = try Self.open(dir)
        // A page cache of 10 pages: a transaction that touches more spills frames into the WAL before its commit,
        // and SQLite then overwrites those frames in place and rewrites their checksums at the commit.
        try writer.execute("PRAGMA cache_size=10")
        for round in 0..<4 {
            try writer.execute("BEGIN IMMEDIATE")
            for i in 0..<300 {
                let s = try writer.statement("INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v")
                try s.bind(["row-\(i % 150)", String(repeating: "r\(round)", count: 300 + i % 50)])
                try s.step()
                s.reset()
            }
            try writer.execute("UPDATE t SET v = v || '.'")
            try writer.execute("COMMIT")
        }
        let (buffered, written) = try #require(WALBatchingVFS.counts(writer))
        #expect(buffered > 0 && written > 40, "frames rewritten in place go straight through: \(written) writes, \(buffered) buffered")
        let expected = try Self.count(reader)
        #expect(expected.hasPrefix("150:"))
        // A crash now: copy the database and its log as they are (nothing checkpointed), open the copy; SQLite
        // rebuilds the index from the log and keeps frames only up to the first one whose checksum is wrong.
        let copy = try TempDir("wal-vfs-copy")
        for suffix in ["", "-wal"] {
            try FileManager.default.copyItem(atPath: path + suffix, toPath: copy.path + "/wal.db" + suffix)
        }
        let walSize = try #require(FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int)
        #expect(walSize > 40 * 4096, "the transactions should have been logged, not checkpointed")
        let recovered = try Database(path: copy.path + "/wal.db")
        #expect(try Self.count(recovered) == expected)
        #expect(try recovered.scalarText("SELECT count(*) FROM t WHERE v NOT LIKE 'r3%.'") == "0")
        #expect(try recovered.scalarText("PRAGMA integrity_check") == "ok")
    }

    @Test("the store's writer uses it: committed events go out one write per group commit")
    func storeWriterUsesIt() throws {
        let dir = try TempDir("wal-vfs-store")
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: dir.path + "/relay.db"))
        defer { store.close() }
        let results = StoreEngineTests.commitAll(store, (0..<200).map { StoreEngineTests.event($0) })
        #expect(results.allSatisfy { if case .success(.inserted) = $0 { return true } else { return false } })
        let (buffered, written) = try #require(try store.writerWALCounts())
        #expect(buffered >= 100)   // 200 events of about 1 KiB: at least 50 frames, each a header and a page
        #expect(written * 4 <= buffered, "\(written) writes reached the WAL for \(buffered) buffered")
    }
}
