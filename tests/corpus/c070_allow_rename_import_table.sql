-- migrate:allow rename-table accounts_tmp is only read by the nightly import, paused for this deploy
ALTER TABLE accounts_tmp RENAME TO accounts_import;
