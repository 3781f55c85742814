DROP TABLE sessions;
DROP TABLE users;
DROP TABLE api_keys;
