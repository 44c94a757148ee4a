-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d),
-- as POSTGRES_USER, who therefore owns every database below.
-- One database per service; "order" is a reserved word, hence the _db suffix on all five.
CREATE DATABASE order_db;
CREATE DATABASE supplier_db;
CREATE DATABASE notify_db;
CREATE DATABASE metrics_db;
CREATE DATABASE console_db;
