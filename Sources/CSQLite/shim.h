#ifndef RELAY_CSQLITE_SHIM_H
#define RELAY_CSQLITE_SHIM_H
#include <sqlite3.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/stat.h>

/* SQLITE_TRANSIENT is a macro casting -1 to a function pointer: Swift cannot import it. */
static inline sqlite3_destructor_type relay_sqlite_transient(void) { return SQLITE_TRANSIENT; }
static inline int relay_sqlite_busy_timeout(sqlite3 *db, int ms) { return sqlite3_busy_timeout(db, ms); }
/* sqlite3_config is variadic. Without memory statistics, SQLite's malloc and free take no global mutex. */
static inline int relay_sqlite_config_memstatus(int on) { return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, on); }
/* The inode number of `path`, through statx asking for nothing else: a stat that asks for the times makes Linux
   (6.13+, multigrain timestamps) give the file's next write a fine-grained mtime, so every write after it dirties
   the inode and every fdatasync writes the inode as well as the data. Returns 0, or -1 with errno set. */
static inline int relay_file_inode(const char *path, uint64_t *inode) {
    struct statx stx;
    long rc = syscall(SYS_statx, AT_FDCWD, path, 0, STATX_INO, &stx);
    if (rc != 0) return -1;
    *inode = stx.stx_ino;
    return 0;
}
/* A file of the relay's WAL-batching VFS (RelaySQLite/WALBatchingVFS.swift): this header, then the default VFS's own
   file, which `real` points to. `state` is the relay's buffer for a WAL file, NULL for any other. */
typedef struct relay_vfs_file {
    sqlite3_file base;
    sqlite3_file *real;
    void *state;
} relay_vfs_file;
#endif
