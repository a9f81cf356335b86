-- See migrations/mysql/0010_appointments.sql. The embedded store also gets the rest of OSCAR's
-- appointment columns and OSCAR's appointmentArchive and other_id tables, as the real schema
-- has them (../shared/oscar/open-o-bc/oscarinit.sql).
ALTER TABLE appointment ADD COLUMN reasonCode int(11) NULL;
ALTER TABLE appointment ADD COLUMN resources varchar(255) NULL;
ALTER TABLE appointment ADD COLUMN style varchar(10) NULL;
ALTER TABLE appointment ADD COLUMN billing varchar(10) NULL;
ALTER TABLE appointment ADD COLUMN imported_status varchar(20) NULL;
ALTER TABLE appointment ADD COLUMN lastupdateuser varchar(6) NULL;
ALTER TABLE appointment ADD COLUMN remarks varchar(50) NULL;
ALTER TABLE appointment ADD COLUMN urgency varchar(30) NULL;
ALTER TABLE appointment ADD COLUMN creatorSecurityId int NULL;
ALTER TABLE appointment ADD COLUMN bookingSource varchar(32) NULL;
CREATE INDEX IF NOT EXISTS appointment_demographic_no ON appointment (demographic_no);

CREATE TABLE IF NOT EXISTS appointmentArchive (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  appointment_no int(12),
  provider_no varchar(6),
  appointment_date date,
  start_time time,
  end_time time,
  name varchar(50),
  demographic_no int(10),
  program_id int,
  notes varchar(255),
  reason varchar(80),
  location varchar(30),
  resources varchar(255),
  type varchar(50),
  style varchar(10),
  billing varchar(10),
  status char(2),
  imported_status varchar(20),
  createdatetime datetime,
  updatedatetime datetime,
  creator varchar(50),
  lastupdateuser varchar(6),
  remarks varchar(50),
  urgency varchar(30),
  creatorSecurityId int,
  bookingSource varchar(32)
);

CREATE TABLE IF NOT EXISTS other_id (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  table_name int NOT NULL,
  table_id varchar(30) NOT NULL,
  other_key varchar(30) NOT NULL,
  other_id varchar(30) NOT NULL,
  deleted boolean NOT NULL
);

CREATE TABLE IF NOT EXISTS oscarflow_appointment (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  other_key TEXT NOT NULL,
  filler_id TEXT NOT NULL,
  appointment_no INTEGER NOT NULL,
  demographic_no INTEGER NOT NULL,
  state TEXT NOT NULL,
  message_time TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS oscarflow_appointment_filler ON oscarflow_appointment (other_key, filler_id);
CREATE INDEX IF NOT EXISTS oscarflow_appointment_no ON oscarflow_appointment (appointment_no);

CREATE TABLE IF NOT EXISTS oscarflow_appointment_message (
  sha256 TEXT NOT NULL PRIMARY KEY,
  appointment_no INTEGER NULL,
  event TEXT NOT NULL,
  outcome TEXT NOT NULL,
  applied_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS oscarflow_appointment_event (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  appointment_no INTEGER NOT NULL,
  demographic_no INTEGER NOT NULL,
  event TEXT NOT NULL,
  starts_at TEXT NULL,
  texted INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS oscarflow_appointment_event_texted ON oscarflow_appointment_event (texted);

CREATE TABLE IF NOT EXISTS oscarflow_provider_lock (
  provider_no TEXT NOT NULL PRIMARY KEY,
  taken INTEGER NOT NULL
);

ALTER TABLE oscarflow_journal ADD COLUMN appointment_no INTEGER NULL;
