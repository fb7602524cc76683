-- Public keys of the servers' delegation token signers. They are not in
-- the SPIFFE bundle or the JWKS on purpose: a delegation token must never
-- pass as a JWT-SVID.
CREATE TABLE delegation_keys (
	kid            TEXT PRIMARY KEY,
	server_id      TEXT NOT NULL,
	public_key_der BLOB NOT NULL,
	created_at     INTEGER NOT NULL
) STRICT;
