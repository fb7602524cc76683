-- Public JWT signing keys each server publishes; the private keys stay in
-- each server's keystore. Like ca_certs, they are read whole, so they take no
-- revision.
CREATE TABLE jwt_keys (
	key_id         TEXT PRIMARY KEY, -- the JWK thumbprint ("kid")
	server_id      TEXT NOT NULL,
	public_key_der BLOB NOT NULL,    -- PKIX SubjectPublicKeyInfo
	not_after      INTEGER NOT NULL
) STRICT;
CREATE INDEX jwt_keys_not_after ON jwt_keys (not_after);
