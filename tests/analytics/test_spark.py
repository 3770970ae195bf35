"""The audit trail read by engines beyond DuckDB: Apache Spark (local mode, one core) reads the
files the real audit writer wrote, as docs/analytics.md says to, and gets what `portcullis sql`
gets: the same rows, decisions, timestamps to the microsecond (UTC), partition values and types.
The Trino table the docs declare has every column of the schema, with its type."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pyspark import SparkContext
from pyspark.sql import SparkSession

from gateway.audit.schema import AUDIT_SCHEMA
from tests.conftest import portcullis

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"

# pyspark 4.3 warns that it does not "fully support" pandas 3; nothing here goes through pandas.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
TRINO_TYPES = {pa.string(): "varchar", pa.int16(): "smallint", pa.int32(): "integer", pa.int64(): "bigint",
               pa.list_(pa.string()): "array(varchar)", pa.timestamp("us", tz="UTC"): "timestamp(6)"}


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """A local Spark session on one core, bound to loopback, in UTC as the docs say, on a machine
    whose local time is not UTC (the session's zone must be what makes the times UTC)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        env.setenv("TZ", "Asia/Kolkata")  # for the JVM (and `portcullis sql`) started from here
        session = (SparkSession.builder.master("local[1]").appName("portcullis-audit")
                   .config("spark.sql.session.timeZone", "UTC")
                   .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
                   .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
                   .getOrCreate())
        yield session
        session.stop()
        gateway = SparkContext._gateway  # the JVM outlives stop(): end it, and the gateway with it
        gateway.shutdown()
        gateway.proc.stdin.close()  # the JVM exits when its launcher's standard input closes
        gateway.proc.wait(60)
        SparkContext._gateway = SparkContext._jvm = None


def sql(data: Path, statement: str) -> list[dict]:
    result = portcullis("sql", "--data", str(data), "--format", "json", "-c", statement)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["rows"]


def read_audit(spark: SparkSession, audit: Path):
    """What docs/analytics.md ("Other engines") tells a Spark user to write."""
    return (spark.read.option("pathGlobFilter", "*.parquet").option("mergeSchema", "true")
            .parquet(str(audit)))


@pytest.mark.slow  # starts a JVM
def test_spark_reads_the_trail_as_portcullis_sql_does(spark: SparkSession, written: Path) -> None:
    audit = written / "audit"
    assert list(audit.glob("_manifest/*.jsonl")), "the manifest chain is there, for Spark to skip"
    first = next(audit.glob("date=*/hour=*/*.parquet"))
    shutil.copy(first, first.with_name(first.name + ".tmp"))  # a whole file: read, it would count twice
    (first.parent / "gw-test-w0-cut.parquet.tmp").write_bytes(b"")  # a conversion cut short

    df = read_audit(spark, audit)
    types = {field.name: field.dataType.simpleString() for field in df.schema.fields}
    assert list(types) == [*AUDIT_SCHEMA.names, "date", "hour"]
    expected = {"ts": "timestamp", "http_status": "smallint", "alerts": "array<string>", "quantity": "bigint",
                "seats_used": "int", "expires_at": "timestamp", "latency_us": "int", "date": "date", "hour": "int"}
    assert {name: types[name] for name in expected} == expected

    assert df.count() == sql(written, "SELECT count(*) AS n FROM audit")[0]["n"] > 100
    assert sorted(tuple(row) for row in df.groupBy("decision").count().collect()) == [
        (row["decision"], row["n"])
        for row in sql(written, "SELECT decision, count(*) AS n FROM audit GROUP BY ALL ORDER BY decision")]

    # Times rendered in each session's time zone (UTC both), and as microseconds since the epoch.
    by_spark = df.selectExpr(
        "decision_id", "date_format(ts, 'yyyy-MM-dd HH:mm:ss.SSSSSS') AS ts_utc", "unix_micros(ts) AS us",
        "http_status", "alerts", "quantity", "seats_used", "unix_micros(expires_at) AS expires_us",
        "CAST(date AS STRING) AS date", "hour").orderBy("decision_id").collect()
    by_duckdb = sql(written, "SELECT decision_id, strftime(ts, '%Y-%m-%d %H:%M:%S.%f') AS ts_utc, epoch_us(ts) AS us, http_status, alerts, quantity, "
                             "seats_used, epoch_us(expires_at) AS expires_us, date, hour FROM audit ORDER BY decision_id")
    assert [row.asDict() for row in by_spark] == by_duckdb
    assert sum(row["us"] % 1_000_000 != 0 for row in by_duckdb) > 100, "timestamps with microseconds"
    assert len({(row["date"], row["hour"]) for row in by_duckdb}) > 5, "several hours"


def test_the_trino_table_in_the_docs_has_every_column_with_its_type() -> None:
    ddl = re.search(r"CREATE TABLE hive\.portcullis\.audit \((.*?)\)\nWITH", DOCS.read_text(), re.DOTALL).group(1)
    declared = [tuple(column.strip().replace('"', "").split(" ", 1)) for column in re.split(r",\s+", ddl)]
    assert declared == [(f.name, TRINO_TYPES[f.type]) for f in AUDIT_SCHEMA] + [("date", "date"), ("hour", "integer")]
