-- Facts about the data directory as a whole, such as the id of the key its data is encrypted
-- under (`encryption_key_id`); no row means none.
CREATE TABLE store_meta (
    name   TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);
