-- See migrations/mysql/0003_fax_inbound.sql for the oscarflow tables. The embedded store
-- also gets OSCAR's document tables (Open-O DDL, IMPORT-SPEC 1.3 and 1.4) so that the fax
-- import runs on it as on a clinic's database.
CREATE TABLE IF NOT EXISTS oscarflow_checkpoint (
  pipeline varchar(100) NOT NULL,
  source varchar(100) NOT NULL,
  value varchar(255) NOT NULL,
  updated_at datetime NOT NULL,
  PRIMARY KEY (pipeline, source)
);

CREATE TABLE IF NOT EXISTS oscarflow_fax_inbound (
  message_id bigint NOT NULL PRIMARY KEY,
  document_no int NULL,
  content_sha256 char(64) NOT NULL,
  pipeline varchar(100) NOT NULL,
  outcome varchar(20) NOT NULL,
  taken_at datetime NOT NULL
);

CREATE TABLE IF NOT EXISTS document (
  document_no INTEGER PRIMARY KEY AUTOINCREMENT,
  doctype varchar(60),
  docClass varchar(60),
  docSubClass varchar(60),
  docdesc varchar(255) NOT NULL default '',
  docxml text,
  docfilename varchar(255) NOT NULL default '',
  doccreator varchar(30) NOT NULL default '',
  responsible varchar(30) NOT NULL default '',
  source varchar(60) default NULL,
  sourceFacility varchar(120),
  program_id int,
  updatedatetime datetime default NULL,
  status char(1) NOT NULL default '',
  contenttype varchar(255) NOT NULL default '',
  contentdatetime datetime,
  public1 int(1) NOT NULL default '0',
  observationdate date default NULL,
  reviewer varchar(30) default '',
  reviewdatetime datetime default NULL,
  number_of_pages int(6),
  appointment_no int(11) default NULL,
  restrictToProgram tinyint(1) NOT NULL,
  abnormal int(1) NOT NULL DEFAULT 0,
  receivedDate date,
  report_media int(11) DEFAULT NULL,
  sent_date_time datetime DEFAULT NULL
);

CREATE TABLE IF NOT EXISTS ctl_document (
  module varchar(30) NOT NULL default '',
  module_id int(6) NOT NULL default '0',
  document_no int(6) NOT NULL default '0',
  status char(1) default NULL,
  PRIMARY KEY (module_id, module, document_no)
);

CREATE TABLE IF NOT EXISTS queue (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name varchar(40) NOT NULL UNIQUE
);

INSERT OR IGNORE INTO queue (id, name) VALUES (1, 'default');

CREATE TABLE IF NOT EXISTS queue_document_link (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  queue_id int(10) NOT NULL,
  document_id int(10) NOT NULL,
  status char(1)
);

CREATE TABLE IF NOT EXISTS faxes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  filename varchar(255),
  faxline varchar(11),
  destination varchar(11),
  recipient varchar(255),
  status varchar(32),
  statusString varchar(255),
  document text,
  numPages int(11),
  stamp datetime,
  user varchar(255),
  jobId int(11),
  oscarUser varchar(6),
  demographicNo int(11),
  sender varchar(255)
)
