#ifndef RELAY_CPOSTGRES_SHIM_H
#define RELAY_CPOSTGRES_SHIM_H
#include <libpq-fe.h>
#include <poll.h>

/* InvalidOid is a macro Swift cannot import. */
static inline Oid relay_pq_invalid_oid(void) { return 0; }
#endif
