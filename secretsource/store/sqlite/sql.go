package sqlite

// Every SQL statement of the package is in this file.

// applicationID marks a database file as meshsds' ("msds"), so that Open
// refuses a SQLite file that belongs to something else.
const applicationID = 0x6d736473

// migrations[i] takes the schema from version i to version i+1; the schema
// version is PRAGMA user_version. Each runs in the same transaction as the
// user_version update. Append, never edit: a database already at version
// i+1 never runs migrations[i] again.
var migrations = []string{
	// 1: the records and the store-wide revision counter. Times are Unix
	// nanoseconds. The records table keeps its rowid: with values of up to a
	// mebibyte, WITHOUT ROWID would store them in the primary key's b-tree.
	`
CREATE TABLE resources (
	kind        TEXT    NOT NULL,
	mesh        TEXT    NOT NULL,
	name        TEXT    NOT NULL,
	data        BLOB    NOT NULL,
	version     INTEGER NOT NULL CHECK (version > 0),
	created_at  INTEGER NOT NULL,
	modified_at INTEGER NOT NULL,
	PRIMARY KEY (kind, mesh, name)
);
CREATE TABLE store_revision (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	revision INTEGER NOT NULL
);
INSERT INTO store_revision (id, revision) VALUES (1, 0);
`,
}

// Schema inspection, used by Open before migrating.
const (
	sqlQuickCheck     = `PRAGMA quick_check`
	sqlJournalModeWAL = `PRAGMA journal_mode = WAL`
	sqlUserVersion    = `PRAGMA user_version`
	sqlApplicationID  = `PRAGMA application_id`
	// sqlCountObjects counts the tables, indexes, views and triggers of a
	// database, to tell an empty file from another application's database.
	sqlCountObjects = `SELECT count(*) FROM sqlite_schema`
	// PRAGMA takes no bound parameters; these are formatted with an int.
	sqlSetUserVersion   = `PRAGMA user_version = %d`
	sqlSetApplicationID = `PRAGMA application_id = %d`
)

// Record statements.
const (
	sqlGet = `
SELECT data, version, created_at, modified_at
FROM resources
WHERE kind = ? AND mesh = ? AND name = ?`

	sqlListAllMeshes = `
SELECT mesh, name, data, version, created_at, modified_at
FROM resources
WHERE kind = ?
ORDER BY mesh, name`

	sqlListMesh = `
SELECT mesh, name, data, version, created_at, modified_at
FROM resources
WHERE kind = ? AND mesh = ?
ORDER BY mesh, name`

	// sqlUpsert creates the record at version 1 or replaces its data and
	// bumps its version; an update never returns version 1, which is how Put
	// tells a creation from an update.
	sqlUpsert = `
INSERT INTO resources (kind, mesh, name, data, version, created_at, modified_at)
VALUES (?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (kind, mesh, name) DO UPDATE SET
	data        = excluded.data,
	version     = resources.version + 1,
	modified_at = excluded.modified_at
RETURNING version, created_at, modified_at`

	// sqlUpdateIfVersion replaces the record only at the expected version;
	// no row returned means the record is absent or at another version.
	sqlUpdateIfVersion = `
UPDATE resources SET
	data        = ?,
	version     = version + 1,
	modified_at = ?
WHERE kind = ? AND mesh = ? AND name = ? AND version = ?
RETURNING version, created_at, modified_at`

	sqlVersion = `
SELECT version FROM resources WHERE kind = ? AND mesh = ? AND name = ?`

	// sqlCreate inserts the record only if absent; no row returned means it
	// already existed and was left alone.
	sqlCreate = `
INSERT INTO resources (kind, mesh, name, data, version, created_at, modified_at)
VALUES (?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (kind, mesh, name) DO NOTHING
RETURNING version, created_at, modified_at`

	sqlDelete = `
DELETE FROM resources WHERE kind = ? AND mesh = ? AND name = ?`

	sqlRevision = `SELECT revision FROM store_revision WHERE id = 1`

	sqlBumpRevision = `UPDATE store_revision SET revision = revision + 1 WHERE id = 1`
)
