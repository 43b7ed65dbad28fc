#!/bin/bash
# Runs once, after InfluxDB 2.7's first setup (/docker-entrypoint-initdb.d): makes the buckets the
# canalflow services read and write through the v1 API, and maps them to database/retention
# policy names (DBRP), since 2.x has no CREATE DATABASE. Same layout as `canalflow ingest setup`
# makes on InfluxDB 1.x: raw readings in the default policy "raw", rollups in "rollups".
set -euo pipefail

db="${CANALFLOW_INFLUX_DB:?}"
raw_bucket="${DOCKER_INFLUXDB_INIT_BUCKET:?}"
rollup_bucket="${CANALFLOW_ROLLUP_BUCKET:?}"

raw_id=$(influx bucket list --name "$raw_bucket" --hide-headers | cut -f1)
rollup_id=$(influx bucket create --name "$rollup_bucket" --retention 0 --hide-headers | cut -f1)
influx v1 dbrp create --db "$db" --rp raw --bucket-id "$raw_id" --default
influx v1 dbrp create --db "$db" --rp rollups --bucket-id "$rollup_id"
echo "canalflow: database $db -> raw=$raw_bucket (default), rollups=$rollup_bucket"
