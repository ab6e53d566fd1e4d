#!/bin/sh
# Entrypoint of a Discord shard pod (StatefulSet <release>-discord): derives this pod's shards from
# its ordinal, writes the bot definitions with them filled in, then becomes `lunos-bots run`.
#
#   pod N of the StatefulSet (POD_NAME ends in -N) runs shards
#   N*DISCORD_SHARDS_PER_POD … N*DISCORD_SHARDS_PER_POD + DISCORD_SHARDS_PER_POD - 1  (< DISCORD_SHARD_COUNT)
#
# Each template in DEFINITION_TEMPLATES/*.toml has __SHARD_COUNT__ and __SHARD_IDS__ replaced
# (e.g. `shard_count = __SHARD_COUNT__`, `shard_ids = [__SHARD_IDS__]` -> `shard_ids = [2, 3]`) and
# is written to LUNOS_BOTS_DIR (an emptyDir). DISCORD_SHARD_IDS ("2, 3") is exported as well.
# Arguments are passed on to `lunos-bots run`.
set -eu

: "${POD_NAME:?POD_NAME must be set (downward API metadata.name)}"
: "${DISCORD_SHARD_COUNT:?}"
: "${DISCORD_SHARDS_PER_POD:?}"
: "${DEFINITION_TEMPLATES:?}"
: "${LUNOS_BOTS_DIR:?}"

index="${POD_NAME##*-}"
case "$index" in
  '' | *[!0-9]*)
    echo "discord-shard-entrypoint: cannot read the pod ordinal from POD_NAME=$POD_NAME" >&2
    exit 1
    ;;
esac

first=$((index * DISCORD_SHARDS_PER_POD))
if [ "$first" -ge "$DISCORD_SHARD_COUNT" ]; then
  echo "discord-shard-entrypoint: pod $index has no shard ($DISCORD_SHARD_COUNT shards, $DISCORD_SHARDS_PER_POD per pod)" >&2
  exit 1
fi
ids=""
shard=$first
while [ "$shard" -lt $((first + DISCORD_SHARDS_PER_POD)) ] && [ "$shard" -lt "$DISCORD_SHARD_COUNT" ]; do
  ids="${ids:+$ids, }$shard"
  shard=$((shard + 1))
done
DISCORD_SHARD_IDS="$ids"
export DISCORD_SHARD_IDS

found=0
for template in "$DEFINITION_TEMPLATES"/*.toml; do
  [ -e "$template" ] || continue
  sed -e "s/__SHARD_COUNT__/$DISCORD_SHARD_COUNT/g" -e "s/__SHARD_IDS__/$DISCORD_SHARD_IDS/g" \
    "$template" > "$LUNOS_BOTS_DIR/${template##*/}"
  found=$((found + 1))
done
if [ "$found" -eq 0 ]; then
  echo "discord-shard-entrypoint: no *.toml in $DEFINITION_TEMPLATES" >&2
  exit 1
fi

printf '{"event": "discord.shards", "pod": "%s", "shard_ids": [%s], "shard_count": %s, "definitions": %s}\n' \
  "$POD_NAME" "$DISCORD_SHARD_IDS" "$DISCORD_SHARD_COUNT" "$found" >&2
exec lunos-bots run "$@"
