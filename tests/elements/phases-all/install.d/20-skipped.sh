#!/bin/sh
echo dotted names must not run >> /var/log/ucl-phases
