#!/usr/bin/env bash
# Make sure Icarus Verilog is installed: apt-get when running as root, otherwise say what to install.
set -euo pipefail
if command -v iverilog >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Icarus Verilog (apt-get install iverilog)..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null
  exit 0
fi
echo "error: Icarus Verilog (iverilog) is missing; install it with: sudo apt-get install iverilog" >&2
exit 1
