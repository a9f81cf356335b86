-- See migrations/mysql/0005_sms.sql. The embedded store also gets OSCAR's appointment table
-- (the columns the reminder producer reads, as in the Open-O schema).
CREATE TABLE IF NOT EXISTS oscarflow_sms_outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind varchar(20) NOT NULL,
  dedupe_key varchar(191) NOT NULL UNIQUE,
  demographic_no int NULL,
  to_number varchar(20) NOT NULL,
  body varchar(1000) NOT NULL,
  state varchar(20) NOT NULL,
  owner varchar(100) NULL,
  rc_message_id bigint NULL,
  attempts int NOT NULL,
  last_error varchar(255) NULL,
  claimed_unix bigint NULL,
  first_claimed_unix bigint NULL,
  created_at datetime NOT NULL,
  updated_at datetime NOT NULL
);

CREATE INDEX IF NOT EXISTS oscarflow_sms_outbox_state ON oscarflow_sms_outbox (state);

CREATE TABLE IF NOT EXISTS oscarflow_sms_optout (
  demographic_no int NOT NULL PRIMARY KEY,
  reason varchar(100) NULL,
  created_at datetime NOT NULL
);

CREATE TABLE IF NOT EXISTS appointment (
  appointment_no INTEGER PRIMARY KEY AUTOINCREMENT,
  provider_no varchar(6) NOT NULL default '',
  appointment_date date NOT NULL default '0001-01-01',
  start_time time NOT NULL default '00:00:00',
  end_time time NOT NULL default '00:00:00',
  name varchar(50) default NULL,
  demographic_no int(10) default NULL,
  program_id int(11) default 0,
  notes varchar(255) default NULL,
  reason varchar(80) default NULL,
  location varchar(30) default NULL,
  type varchar(50) default NULL,
  status char(2) default NULL,
  createdatetime datetime default NULL,
  updatedatetime datetime default NULL,
  creator varchar(50) default NULL
);

CREATE INDEX IF NOT EXISTS appointment_date ON appointment (appointment_date, start_time, demographic_no)
