-- The rights oscarflow needs on OSCAR's database, and no others: no DROP, no ALTER of
-- OSCAR's tables, no GRANT OPTION, no other database, no FILE or SUPER. Create the account
-- first (over the network with REQUIRE SSL), then run this file as an administrator with
-- your database and account put in, e.g.
--
--   CREATE USER 'oscarflow'@'10.0.0.5' IDENTIFIED BY '...' REQUIRE SSL;
--   sed -e 's/`oscar`/`oscar_bc`/g' -e "s/'oscarflow'@'10.0.0.5'/'oscarflow'@'10.0.0.7'/g" \
--     deploy/oscarflow-grants.sql | mariadb -uroot
--
-- A pipeline kind you do not run needs none of its lines. .ci/run applies this very file to
-- a test account, and tests/mariadb.rs imports labs and keeps dead letters with it.

-- oscarflow's own tables (oscarflow_*), created and migrated at start. MariaDB has no table
-- wildcards: one line per table. CREATE on a table name allows creating that table only.
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_migrations` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_dead_letter` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_dead_letter_chunk` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_lab_import` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_lab_message` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_journal` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_mllp_answer` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_checkpoint` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_fax_inbound` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_fax_outbound` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_sms_outbox` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_sms_optout` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_appointment` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_appointment_message` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_appointment_event` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, DELETE, ALTER, INDEX ON `oscar`.`oscarflow_provider_lock` TO 'oscarflow'@'10.0.0.5';
-- The audit trail: rows are only ever added (no UPDATE, no DELETE: oscarflow cannot rewrite
-- it); the head of each hash chain is updated with every row.
GRANT CREATE, SELECT, INSERT, ALTER, INDEX ON `oscar`.`oscarflow_audit` TO 'oscarflow'@'10.0.0.5';
GRANT CREATE, SELECT, INSERT, UPDATE, ALTER, INDEX ON `oscar`.`oscarflow_audit_head` TO 'oscarflow'@'10.0.0.5';

-- Labs: what OSCAR's own lab upload writes. measurements: a corrected version of a lab
-- retires the measurements of the version it replaces (kept in measurementsDeleted).
GRANT SELECT, INSERT ON `oscar`.`fileUploadCheck` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`hl7TextMessage` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`hl7TextInfo` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`patientLabRouting` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`providerLabRouting` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`measurementsExt` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`measurementsDeleted` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT, DELETE ON `oscar`.`measurements` TO 'oscarflow'@'10.0.0.5';

-- Faxes in (documents filed to OSCAR's inbox) and out (OSCAR's fax queue).
GRANT SELECT, INSERT ON `oscar`.`document` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`ctl_document` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`queue_document_link` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT, UPDATE ON `oscar`.`faxes` TO 'oscarflow'@'10.0.0.5';

-- OSCAR's own audit log: the rows OSCAR's upload writes, added beside its own. Insert only:
-- the rest of OSCAR's log, other users' activity, stays unreadable to oscarflow.
GRANT INSERT ON `oscar`.`log` TO 'oscarflow'@'10.0.0.5';

-- The appointment book: reminders read it; a scheduling feed (SIU, the oscar_appointment sink)
-- books, reschedules, cancels and deletes as OSCAR's screens do, archiving each version first.
-- A clinic without a scheduling feed may keep SELECT alone on appointment and leave out the rest.
GRANT SELECT, INSERT, UPDATE, DELETE ON `oscar`.`appointment` TO 'oscarflow'@'10.0.0.5';
GRANT INSERT ON `oscar`.`appointmentArchive` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT, INSERT ON `oscar`.`other_id` TO 'oscarflow'@'10.0.0.5';

-- Read only: patient matching, lab routing, flowsheet measurements, reminders.
GRANT SELECT ON `oscar`.`demographic` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT ON `oscar`.`demographicExt` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT ON `oscar`.`demographic_merged` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT ON `oscar`.`provider` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT ON `oscar`.`incomingLabRules` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT ON `oscar`.`measurementMap` TO 'oscarflow'@'10.0.0.5';
GRANT SELECT ON `oscar`.`measurementType` TO 'oscarflow'@'10.0.0.5';
