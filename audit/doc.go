// Package audit is writ's tamper-evident log: every state change and every
// issuance is one JSON event, and the events are the leaves of an RFC 6962
// Merkle tree whose (size, root) checkpoints are signed with the server's
// Ed25519 audit key as notes in the tlog checkpoint text format.
//
// A leaf is always the exact bytes that were stored. Nothing in this package
// hashes a re-marshalled event, because two encoders (or two versions of one)
// need not agree byte for byte, and the tree must commit to what was kept.
//
// The package has no storage of its own. A writer keeps, per appended leaf,
// the leaf bytes and the hashes [AppendHashes] returns (tlog's stored-hash
// layout); [Hashes] is the in-memory form of the same layout. Readers see a
// log through [LeafSource], which the store and an export file
// ([ReadExport]) both provide, and [Verify] checks it against signed
// checkpoints, including ones an outside party kept from earlier exports.
// Verify trusts only the keys it is given, normally a [KeyBundle] kept
// outside the servers ([ParseKeys]); a log is OK only when checkpoints
// signed with those keys cover every event. A writer proves each new tree
// extends the last head it signed with [CheckExtends] or [ProveExtends].
package audit
