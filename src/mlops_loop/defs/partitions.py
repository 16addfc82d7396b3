"""One dynamic partition per batch file that lands."""

import dagster as dg

batches = dg.DynamicPartitionsDefinition(name="batches")
