-- Which edge each change came through (cli, link, api, system). Rows written before this
-- migration have none: their actor tells (`system:…` was qaloop, anyone else used the CLI).
ALTER TABLE assignment_history ADD COLUMN via TEXT;
