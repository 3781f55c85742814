-- The confusable skeleton (UTS #39) of each username's case-folded form: uniqueness ignores
-- look-alikes too. Computed by ilo-api (no database can); rows from before are filled in at
-- startup. NULLs do not collide under a unique index, in PostgreSQL and SQLite alike.
ALTER TABLE users ADD COLUMN username_skeleton TEXT;
CREATE UNIQUE INDEX users_username_skeleton ON users (username_skeleton);
