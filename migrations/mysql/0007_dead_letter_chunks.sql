-- Dead letters of any size. A dead letter's bytes up to 256 KiB stay in its row's `raw`,
-- larger bytes go here in 256 KiB chunks, each its own statement, so that no statement comes
-- near the server max_allowed_packet (16 MiB by default, MySQL used 4 MiB) and an
-- oversized input is written without ever being held whole in memory. `raw_chunks` counts
-- them (0: the bytes are in `raw`).
ALTER TABLE oscarflow_dead_letter ADD COLUMN raw_chunks int NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS oscarflow_dead_letter_chunk (
  dead_letter_id varchar(26) NOT NULL,
  seq int NOT NULL,
  bytes mediumblob NOT NULL,
  PRIMARY KEY (dead_letter_id, seq)
) DEFAULT CHARSET=utf8mb4;
