-- The embedded store's fileUploadCheck gets an index on md5sum: every new lab file looks
-- its MD5 up there (files uploaded through OSCAR's own screen are duplicates), and without
-- an index that is a scan of every file ever imported. OSCAR's MySQL schema has no such
-- index. oscarflow does not change OSCAR's schema, it logs a warning with the statement
-- instead (see the README, "Operations").
CREATE INDEX IF NOT EXISTS fileUploadCheck_oscarflow_md5sum ON fileUploadCheck (md5sum);
