#ifndef RELAY_CSQLITE_SHIM_H
#define RELAY_CSQLITE_SHIM_H
#include <sqlite3.h>

/* SQLITE_TRANSIENT is a macro casting -1 to a function pointer: Swift cannot import it. */
static inline sqlite3_destructor_type relay_sqlite_transient(void) { return SQLITE_TRANSIENT; }
static inline int relay_sqlite_busy_timeout(sqlite3 *db, int ms) { return sqlite3_busy_timeout(db, ms); }
/* sqlite3_config is variadic. Without memory statistics, SQLite's malloc and free take no global mutex. */
static inline int relay_sqlite_config_memstatus(int on) { return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, on); }
#endif
