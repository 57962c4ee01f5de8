package postgres

// Every SQL statement of the package is in this file. Table names are not
// schema-qualified: they live in the first schema of the connection's
// search_path (public by default; ?search_path=meshsds in the URL puts them
// elsewhere).

// migrationLockID is the key of the transaction-level advisory lock under
// which Open migrates the schema ("meshsds" in ASCII), so that replicas
// starting together migrate once, one after the other.
const migrationLockID int64 = 0x6d657368736473

// migrations[i] takes the schema from version i to version i+1; the schema
// version is the row of schema_version. Each runs in the same transaction
// as the schema_version update, under the migration lock. Append, never
// edit: a database already at version i+1 never runs migrations[i] again.
var migrations = []string{
	// 1: the records and the store-wide revision counter. mesh and name
	// sort in byte order (COLLATE "C") whatever the database's collation,
	// as store.Store.List promises, and the primary key's index serves
	// that order. Data above 2 kB is TOASTed out of line by PostgreSQL.
	`
CREATE TABLE resources (
	kind        text COLLATE "C" NOT NULL,
	mesh        text COLLATE "C" NOT NULL,
	name        text COLLATE "C" NOT NULL,
	data        bytea            NOT NULL,
	version     bigint           NOT NULL CHECK (version > 0),
	created_at  timestamptz      NOT NULL,
	modified_at timestamptz      NOT NULL,
	PRIMARY KEY (kind, mesh, name)
);
CREATE TABLE store_revision (
	id       smallint PRIMARY KEY CHECK (id = 1),
	revision bigint   NOT NULL
);
INSERT INTO store_revision (id, revision) VALUES (1, 0);
`,
	// 2: notifications and the replicas' shared state. Every write that
	// moves the revision notifies channel meshsds_store, and every change
	// of the replicas' state meshsds_cluster, with the schema as payload
	// (channels are database-wide; stores in other schemas ignore it), so
	// that every replica LISTENing learns of it at once (listen.go).
	// replicas holds a lease and the CA change progress of each replica,
	// ca_changes each mesh's CA change as the replicas share it
	// (cluster.go); a heartbeat that changes nothing but the lease does not
	// notify.
	`
CREATE FUNCTION meshsds_notify_store() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('meshsds_store', current_schema());
	RETURN NULL;
END
$$;
CREATE TRIGGER store_revision_notify AFTER UPDATE ON store_revision
	FOR EACH ROW EXECUTE FUNCTION meshsds_notify_store();

CREATE FUNCTION meshsds_notify_cluster() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('meshsds_cluster', current_schema());
	RETURN NULL;
END
$$;
CREATE TABLE replicas (
	id          text COLLATE "C" PRIMARY KEY,
	progress    bytea            NOT NULL,
	lease_until timestamptz      NOT NULL
);
CREATE TRIGGER replicas_notify AFTER INSERT OR DELETE ON replicas
	FOR EACH ROW EXECUTE FUNCTION meshsds_notify_cluster();
CREATE TRIGGER replicas_progress_notify AFTER UPDATE ON replicas
	FOR EACH ROW WHEN (OLD.progress IS DISTINCT FROM NEW.progress)
	EXECUTE FUNCTION meshsds_notify_cluster();
CREATE TABLE ca_changes (
	mesh    text COLLATE "C" PRIMARY KEY,
	state   bytea            NOT NULL,
	version bigint           NOT NULL CHECK (version > 0)
);
CREATE TRIGGER ca_changes_notify AFTER INSERT OR UPDATE OR DELETE ON ca_changes
	FOR EACH ROW EXECUTE FUNCTION meshsds_notify_cluster();
`,
}

// Schema inspection and versioning, used by Open.
const (
	sqlMigrationLock = `SELECT pg_advisory_xact_lock($1)`

	// sqlTablesExist reports which of the tables of this package exist in
	// the search path: schema_version, and the first migration's.
	sqlTablesExist = `
SELECT to_regclass('schema_version') IS NOT NULL,
       to_regclass('resources') IS NOT NULL OR to_regclass('store_revision') IS NOT NULL`

	sqlCreateSchemaVersion = `
CREATE TABLE schema_version (
	id      smallint PRIMARY KEY CHECK (id = 1),
	version integer  NOT NULL
);
INSERT INTO schema_version (id, version) VALUES (1, 0);
`

	sqlSchemaVersion = `SELECT version FROM schema_version WHERE id = 1`

	sqlSetSchemaVersion = `UPDATE schema_version SET version = $1 WHERE id = 1`
)

// Record statements. Every write is one statement whose data-modifying
// common table expressions write the record and, only when a row was
// written, bump the revision: one round trip, atomic without an explicit
// transaction, and a refused write (no row) leaves the revision alone. The
// revision row is always the last lock a write takes, so writes cannot
// deadlock each other.
const (
	sqlGet = `
SELECT data, version, created_at, modified_at
FROM resources
WHERE kind = $1 AND mesh = $2 AND name = $3`

	sqlListAllMeshes = `
SELECT mesh, name, data, version, created_at, modified_at
FROM resources
WHERE kind = $1
ORDER BY mesh, name`

	sqlListMesh = `
SELECT mesh, name, data, version, created_at, modified_at
FROM resources
WHERE kind = $1 AND mesh = $2
ORDER BY mesh, name`

	// sqlUpsert creates the record at version 1 or replaces its data and
	// bumps its version; an update never returns version 1, which is how
	// Put tells a creation from an update. INSERT ... ON CONFLICT DO UPDATE
	// either inserts or updates, even against concurrent writers.
	sqlUpsert = `
WITH w AS (
	INSERT INTO resources (kind, mesh, name, data, version, created_at, modified_at)
	VALUES ($1, $2, $3, $4, 1, $5, $5)
	ON CONFLICT (kind, mesh, name) DO UPDATE SET
		data        = excluded.data,
		version     = resources.version + 1,
		modified_at = excluded.modified_at
	RETURNING version, created_at, modified_at
), r AS (
	UPDATE store_revision SET revision = revision + 1
	WHERE id = 1 AND EXISTS (SELECT FROM w)
)
SELECT version, created_at, modified_at FROM w`

	// sqlUpdateIfVersion replaces the record only at the expected version;
	// no row returned means the record is absent or at another version. A
	// concurrent update of the row makes this one wait, then re-check the
	// version against the committed row (READ COMMITTED), so exactly one
	// of two writers expecting the same version wins.
	sqlUpdateIfVersion = `
WITH w AS (
	UPDATE resources SET
		data        = $1,
		version     = version + 1,
		modified_at = $2
	WHERE kind = $3 AND mesh = $4 AND name = $5 AND version = $6
	RETURNING version, created_at, modified_at
), r AS (
	UPDATE store_revision SET revision = revision + 1
	WHERE id = 1 AND EXISTS (SELECT FROM w)
)
SELECT version, created_at, modified_at FROM w`

	sqlVersion = `
SELECT version FROM resources WHERE kind = $1 AND mesh = $2 AND name = $3`

	// sqlCreate inserts the record only if absent; no row returned means it
	// already existed and was left alone. A concurrent insert of the same
	// key makes this one wait for its outcome.
	sqlCreate = `
WITH w AS (
	INSERT INTO resources (kind, mesh, name, data, version, created_at, modified_at)
	VALUES ($1, $2, $3, $4, 1, $5, $5)
	ON CONFLICT (kind, mesh, name) DO NOTHING
	RETURNING version, created_at, modified_at
), r AS (
	UPDATE store_revision SET revision = revision + 1
	WHERE id = 1 AND EXISTS (SELECT FROM w)
)
SELECT version, created_at, modified_at FROM w`

	// sqlDelete returns one row when the record was there.
	sqlDelete = `
WITH w AS (
	DELETE FROM resources WHERE kind = $1 AND mesh = $2 AND name = $3
	RETURNING 1
), r AS (
	UPDATE store_revision SET revision = revision + 1
	WHERE id = 1 AND EXISTS (SELECT FROM w)
)
SELECT count(*) FROM w`

	sqlRevision = `SELECT revision FROM store_revision WHERE id = 1`
)

// Notifications (listen.go).
const (
	channelStore   = "meshsds_store"
	channelCluster = "meshsds_cluster"
	sqlListen      = `LISTEN meshsds_store; LISTEN meshsds_cluster`
	sqlSchema      = `SELECT current_schema()`
)

// The replicas' shared state (cluster.go). Lease times are the server's
// (now()), so that the replicas' clocks need not agree.
const (
	sqlPublish = `
INSERT INTO replicas (id, progress, lease_until)
VALUES ($1, $2, now() + $3 * interval '1 microsecond')
ON CONFLICT (id) DO UPDATE SET
	progress    = excluded.progress,
	lease_until = excluded.lease_until`

	sqlLeave = `DELETE FROM replicas WHERE id = $1`

	sqlLiveReplicas = `
SELECT id, progress, (extract(epoch FROM lease_until - now()) * 1000000)::bigint
FROM replicas
WHERE lease_until > now()`

	sqlChanges = `SELECT mesh, state, version FROM ca_changes`

	sqlInsertChange = `
INSERT INTO ca_changes (mesh, state, version) VALUES ($1, $2, 1)
ON CONFLICT (mesh) DO NOTHING`

	sqlUpdateChange = `
UPDATE ca_changes SET state = $1, version = version + 1
WHERE mesh = $2 AND version = $3`

	// sqlPruneReplicas forgets replicas whose lease expired long ago.
	sqlPruneReplicas = `DELETE FROM replicas WHERE lease_until < now() - $1 * interval '1 microsecond'`

	// The leader holds this session-level advisory lock, two-key form so
	// that it cannot collide with the migration lock, the second key the
	// schema's so that stores in two schemas elect a leader each. A
	// session lock dies with its connection: a leader that dies releases
	// it at once.
	sqlTryLead = `SELECT pg_try_advisory_lock(1835364211, hashtext(current_schema()))`
	sqlUnlead  = `SELECT pg_advisory_unlock(1835364211, hashtext(current_schema()))`
)
