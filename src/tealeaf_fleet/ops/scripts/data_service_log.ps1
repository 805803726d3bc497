# tealeaf-fleet-op: data_service_log
param([string]$InstallDir, [string]$Since)
# Whether the Data Service came up with "TLS Port:" or "Port:" (the vendor's verification).

Write-FleetResult (Get-FleetDataServiceMode $InstallDir $Since)
