-- Public keys of the servers' delegation token signers. They are not in
-- the SPIFFE bundle or the JWKS on purpose: a delegation token must never
-- pass as a JWT-SVID.
CREATE TABLE delegation_keys (
	kid            text COLLATE "C" PRIMARY KEY,
	server_id      text COLLATE "C" NOT NULL,
	public_key_der bytea NOT NULL,
	created_at     bigint NOT NULL
);
