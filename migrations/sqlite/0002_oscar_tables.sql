-- oscarflow embedded (SQLite) copy of the OSCAR tables the lab importer reads and writes.
--
-- Source: Open-O (open-osp/Open-O @ 57721f99) database/mysql/oscarinit.sql, as quoted in
-- ../shared/oscar/IMPORT-SPEC.md sections 1.1, 1.2 and 1.5, checked column by column against a
-- real MariaDB database built with ../shared/oscar/load-open-o-bc.sh (SHOW CREATE TABLE).
-- Where the loaded schema differs from the oscarinit.sql text, the loaded schema wins:
--   measurementMap     - recreated by measurementMapData.sql: loinc_code nullable, name NOT NULL
--   demographic        - oscarinit_2025.sql moves pref_name after residentialPostal
--   demographic_merged - oscarinit_2025.sql adds a foreign key merged_to -> demographic
--   incomingLabRules   - archive default is the string '0'
--
-- Table names, column names, column order, declared types, NOT NULL and DEFAULTs are OSCAR's.
-- Only what SQLite cannot parse is translated:
--   int ... auto_increment primary key  ->  INTEGER PRIMARY KEY AUTOINCREMENT (same column name)
--   UNSIGNED, column prefix lengths such as provider_no(3) or val(100)  ->  dropped
--   KEY / INDEX / UNIQUE KEY inside CREATE TABLE  ->  CREATE [UNIQUE] INDEX IF NOT EXISTS after
--     the table, named <table>_<mysql index name> because SQLite index names are global
--   CONSTRAINT FOREIGN KEY  ->  FOREIGN KEY
-- providerLabRouting.timestamp has no default here, as in the loaded MariaDB schema: the
-- importer always sets it.
--
-- This file is run as one multi-statement batch: the only semicolons in it end statements.

-- ---------------------------------------------------------------------------------------------
-- 1.1 Lab tables
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS fileUploadCheck (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  provider_no varchar(6) NOT NULL default '',
  filename varchar(255) NOT NULL default '',
  md5sum varchar(255) default NULL,
  date_time datetime NOT NULL
);

CREATE TABLE IF NOT EXISTS hl7TextMessage (
  lab_id INTEGER PRIMARY KEY AUTOINCREMENT,
  fileUploadCheck_id int(10) NOT NULL,
  message longtext NOT NULL,
  type varchar(100) not null,
  serviceName varchar(100) not null,
  created datetime not null
);
CREATE INDEX IF NOT EXISTS hl7TextMessage_hl7TextMessage_ikey ON hl7TextMessage (created);

CREATE TABLE IF NOT EXISTS hl7TextInfo (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  lab_no int(10) NOT NULL,
  sex varchar(1),
  health_no varchar(12),
  result_status varchar(1),
  final_result_count int(10),
  obr_date varchar(20),
  priority varchar(1),
  requesting_client varchar(100),
  discipline varchar(100),
  last_name varchar(30),
  first_name varchar(30),
  report_status varchar(20) NOT NULL,
  accessionNum varchar(255),
  filler_order_num varchar(50),
  sending_facility varchar(50),
  label varchar(255)
);
CREATE INDEX IF NOT EXISTS hl7TextInfo_labno_index ON hl7TextInfo (lab_no);
CREATE INDEX IF NOT EXISTS hl7TextInfo_accession_index ON hl7TextInfo (accessionNum);

CREATE TABLE IF NOT EXISTS patientLabRouting (
  demographic_no int(10) NOT NULL default '0',
  lab_no int(10) NOT NULL default '0',
  lab_type char(3) NOT NULL default 'MDS',
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  created datetime not null,
  dateModified datetime
);
CREATE INDEX IF NOT EXISTS patientLabRouting_demographic ON patientLabRouting (demographic_no);
CREATE INDEX IF NOT EXISTS patientLabRouting_lab_type_index ON patientLabRouting (lab_type);
CREATE INDEX IF NOT EXISTS patientLabRouting_lab_no_index ON patientLabRouting (lab_no);
CREATE INDEX IF NOT EXISTS patientLabRouting_all_index ON patientLabRouting (lab_type, lab_no, demographic_no);
CREATE INDEX IF NOT EXISTS patientLabRouting_patientLabRouting_ikey ON patientLabRouting (created);

CREATE TABLE IF NOT EXISTS providerLabRouting (
  provider_no varchar(6) NOT NULL default '',
  lab_no int(10) NOT NULL default '0',
  status char(1) default '',
  comment varchar(255) default '',
  timestamp timestamp NOT NULL,
  lab_type char(3) default 'MDS',
  id INTEGER PRIMARY KEY AUTOINCREMENT
);
CREATE INDEX IF NOT EXISTS providerLabRouting_labno_index ON providerLabRouting (lab_no);
CREATE INDEX IF NOT EXISTS providerLabRouting_provider_lab_status_index ON providerLabRouting (provider_no, status);

CREATE TABLE IF NOT EXISTS incomingLabRules (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  provider_no varchar(6) NOT NULL,
  status varchar(1),
  frwdProvider_no varchar(6),
  archive varchar(1) default '0'
);

CREATE TABLE IF NOT EXISTS incomingLabRulesType (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  forward_rule_id int(10),
  type VARCHAR(10) NOT NULL,
  FOREIGN KEY (forward_rule_id) REFERENCES incomingLabRules (id) ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS incomingLabRulesType_forward_rule_id ON incomingLabRulesType (forward_rule_id);

CREATE TABLE IF NOT EXISTS recyclebin (
  recyclebin_no INTEGER PRIMARY KEY AUTOINCREMENT,
  provider_no varchar(6) default NULL,
  updatedatetime datetime default NULL,
  table_name varchar(30) default NULL,
  keyword varchar(50) default NULL,
  table_content text
);
CREATE INDEX IF NOT EXISTS recyclebin_keyword ON recyclebin (keyword);

-- ---------------------------------------------------------------------------------------------
-- 1.2 Measurement tables
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS measurements (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  type varchar(50) NOT NULL,
  demographicNo int(10) NOT NULL default '0',
  providerNo varchar(6) NOT NULL default '',
  dataField varchar(255) NOT NULL,
  measuringInstruction varchar(255) NOT NULL,
  comments varchar(255),
  dateObserved datetime,
  dateEntered datetime NOT NULL,
  appointmentNo int(10)
);
CREATE INDEX IF NOT EXISTS measurements_type ON measurements (type);
CREATE INDEX IF NOT EXISTS measurements_measuringInstruction ON measurements (measuringInstruction);
CREATE INDEX IF NOT EXISTS measurements_demographicNo ON measurements (demographicNo);
CREATE INDEX IF NOT EXISTS measurements_measurement_integrator ON measurements (demographicNo, dateEntered);

CREATE TABLE IF NOT EXISTS measurementsExt (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  measurement_id int(10) NOT NULL,
  keyval varchar(20) NOT NULL,
  val text NOT NULL
);
CREATE INDEX IF NOT EXISTS measurementsExt_measurement_id ON measurementsExt (measurement_id);
CREATE INDEX IF NOT EXISTS measurementsExt_measurements_ext_keyval_val ON measurementsExt (keyval, val);

CREATE TABLE IF NOT EXISTS measurementsDeleted (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  type varchar(4) NOT NULL,
  demographicNo int(10) NOT NULL default '0',
  providerNo varchar(6) NOT NULL default '',
  dataField varchar(255) NOT NULL,
  measuringInstruction varchar(255) NOT NULL,
  comments varchar(255) NOT NULL,
  dateObserved datetime NOT NULL,
  dateEntered datetime NOT NULL,
  dateDeleted datetime NOT NULL,
  originalId int NOT NULL
);

CREATE TABLE IF NOT EXISTS measurementMap (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  loinc_code varchar(20) default NULL,
  ident_code varchar(20) NOT NULL,
  name varchar(255) NOT NULL,
  lab_type varchar(10) NOT NULL
);
CREATE INDEX IF NOT EXISTS measurementMap_ident_code ON measurementMap (ident_code);

CREATE TABLE IF NOT EXISTS measurementType (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  type varchar(50) NOT NULL,
  typeDisplayName varchar(255) NOT NULL,
  typeDescription varchar(255) NOT NULL,
  measuringInstruction varchar(255) NOT NULL,
  validation varchar(100) NOT NULL,
  createDate datetime not null
);
CREATE INDEX IF NOT EXISTS measurementType_id ON measurementType (id);
CREATE INDEX IF NOT EXISTS measurementType_type ON measurementType (type);
CREATE INDEX IF NOT EXISTS measurementType_measuringInstruction ON measurementType (measuringInstruction);

-- ---------------------------------------------------------------------------------------------
-- 1.5 Patient and provider tables (read for matching and routing)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS demographic (
  demographic_no INTEGER PRIMARY KEY AUTOINCREMENT,
  title varchar(10),
  last_name varchar(30) NOT NULL default '',
  first_name varchar(30) NOT NULL default '',
  address varchar(60),
  city varchar(50),
  province varchar(20),
  postal varchar(9),
  phone varchar(20),
  phone2 varchar(20),
  email varchar(100),
  myOscarUserName varchar(1),
  year_of_birth varchar(4),
  month_of_birth varchar(2),
  date_of_birth varchar(2),
  hin varchar(20),
  ver char(3),
  roster_status varchar(20),
  roster_date date,
  roster_termination_date date,
  roster_termination_reason varchar(2),
  roster_enrolled_to varchar(20) DEFAULT NULL,
  patient_status varchar(20),
  patient_status_date date,
  date_joined date,
  chart_no varchar(10),
  official_lang varchar(60),
  spoken_lang varchar(60),
  provider_no varchar(11),
  sex char(1) NOT NULL default '',
  end_date date,
  eff_date date,
  pcn_indicator varchar(20),
  hc_type varchar(20),
  hc_renew_date date,
  family_doctor varchar(80),
  alias varchar(70),
  previousAddress varchar(60),
  children varchar(1),
  sourceOfIncome varchar(1),
  citizenship varchar(40),
  sin varchar(15),
  country_of_origin char(4),
  newsletter varchar(10),
  anonymous varchar(32),
  lastUpdateUser varchar(6),
  lastUpdateDate datetime not null,
  consentToUseEmailForCare tinyint(1) DEFAULT NULL,
  middleNames varchar(100) DEFAULT NULL,
  residentialAddress varchar(60) DEFAULT NULL,
  residentialCity varchar(50) DEFAULT NULL,
  residentialProvince varchar(20) DEFAULT NULL,
  residentialPostal varchar(9) DEFAULT NULL,
  pref_name varchar(30) NOT NULL DEFAULT '',
  genderId int(11) null,
  pronoun varchar(25) null,
  pronounId int null,
  gender varchar(25) null
);
CREATE INDEX IF NOT EXISTS demographic_hin ON demographic (hin);
CREATE INDEX IF NOT EXISTS demographic_name ON demographic (last_name, first_name);
CREATE INDEX IF NOT EXISTS demographic_country_of_origin ON demographic (country_of_origin);

CREATE TABLE IF NOT EXISTS demographic_merged (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  demographic_no INT(10) NOT NULL,
  merged_to INT(10) NOT NULL,
  deleted INT(1) NOT NULL DEFAULT 0,
  lastUpdateUser varchar(6) default NULL,
  lastUpdateDate date default NULL,
  FOREIGN KEY (merged_to) REFERENCES demographic (demographic_no)
);
CREATE INDEX IF NOT EXISTS demographic_merged_dem_merged ON demographic_merged (demographic_no, merged_to, deleted);
CREATE INDEX IF NOT EXISTS demographic_merged_dem_merged_dem ON demographic_merged (demographic_no, deleted);
CREATE INDEX IF NOT EXISTS demographic_merged_dem_merged_merge ON demographic_merged (merged_to, deleted);

CREATE TABLE IF NOT EXISTS demographicExt (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  demographic_no int(10) default NULL,
  provider_no varchar(6) default NULL,
  key_val varchar(64) default NULL,
  value text,
  date_time datetime default NULL,
  hidden char(1) default '0'
);
CREATE UNIQUE INDEX IF NOT EXISTS demographicExt_uk_demo_ext ON demographicExt (demographic_no, key_val);
CREATE INDEX IF NOT EXISTS demographicExt_demographic_no ON demographicExt (demographic_no);

CREATE TABLE IF NOT EXISTS provider (
  provider_no varchar(6) NOT NULL default '',
  last_name varchar(30) NOT NULL default '',
  first_name varchar(30) NOT NULL default '',
  provider_type varchar(15) NOT NULL default '',
  supervisor varchar(6),
  specialty varchar(40) NOT NULL default '',
  team varchar(20) default '',
  sex char(1) NOT NULL default '',
  dob date default NULL,
  address varchar(40) default NULL,
  phone varchar(20) default NULL,
  work_phone varchar(50) default NULL,
  ohip_no varchar(20) default NULL,
  rma_no varchar(20) default NULL,
  billing_no varchar(20) default NULL,
  hso_no varchar(10) default NULL,
  status char(1) default NULL,
  comments text,
  provider_activity char(3) default NULL,
  practitionerNo varchar(20),
  init varchar(10) default NULL,
  job_title varchar(100) default NULL,
  email varchar(60) default NULL,
  title varchar(20) default NULL,
  lastUpdateUser varchar(6) default NULL,
  lastUpdateDate datetime not null,
  signed_confidentiality datetime,
  practitionerNoType varchar(255),
  PRIMARY KEY (provider_no)
);
CREATE INDEX IF NOT EXISTS provider_provider_ikey ON provider (lastUpdateDate);
