{{/* Names ------------------------------------------------------------------------------------------ */}}

{{- define "lunos-bots.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name; kept to 50 characters so "-discord" and the StatefulSet's pod suffix fit. */}}
{{- define "lunos-bots.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Discord StatefulSet's name: at most 52 characters, since its pods carry the label
controller-revision-hash=<name>-<10-character hash>, which must fit in 63. */}}
{{- define "lunos-bots.discordName" -}}
{{- printf "%s-discord" (include "lunos-bots.fullname" . | trunc 44 | trimSuffix "-") }}
{{- end }}

{{- define "lunos-bots.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lunos-bots.labels" -}}
helm.sh/chart: {{ include "lunos-bots.chart" . }}
{{ include "lunos-bots.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lunos-bots.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lunos-bots.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lunos-bots.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "lunos-bots.fullname" .) }}
{{- end }}

{{- define "lunos-bots.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/* Checks that fail the render with a message instead of a crash-looping pod. */}}
{{- define "lunos-bots.validate" -}}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis.url or redis.existingSecret is required: the chart bundles no Redis, and replicas share dedupe, locks and history through it" }}
{{- end }}
{{- if not (or .Values.secrets.existingSecret .Values.secrets.values) }}
{{- fail "set secrets.existingSecret (a Secret holding LUNOS_API_KEY and the bots' tokens) or secrets.values" }}
{{- end }}
{{- if and (not .Values.secrets.existingSecret) (not (get .Values.secrets.values "LUNOS_API_KEY")) }}
{{- fail "secrets.values.LUNOS_API_KEY is required (or use secrets.existingSecret)" }}
{{- end }}
{{- if not (or .Values.slack.enabled .Values.discord.enabled) }}
{{- fail "neither slack.enabled nor discord.enabled: nothing to deploy" }}
{{- end }}
{{- end }}

{{/*
ConfigMap volume items for one workload: only the listed files of bots.definitions.
Call with (dict "root" $ "files" <list> "workload" <name>).
*/}}
{{- define "lunos-bots.definitionItems" -}}
{{- $defs := .root.Values.bots.definitions | default dict }}
{{- if not .files }}
{{- fail (printf "%s.definitions is empty: list the files of bots.definitions this workload runs" .workload) }}
{{- end }}
{{- range .files }}
{{- if not (hasKey $defs .) }}
{{- fail (printf "%s.definitions lists %q, which is not a key of bots.definitions" $.workload .) }}
{{- end }}
- key: {{ . | quote }}
  path: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Environment shared by both workloads (secrets come separately, through envFrom). */}}
{{- define "lunos-bots.env" -}}
- name: PORT
  value: {{ .Values.containerPort | toString | quote }}
- name: LOG_FORMAT
  value: json
- name: SHUTDOWN_GRACE_S
  value: {{ .Values.shutdownGraceSeconds | quote }}
{{- if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else }}
- name: REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- with .Values.redis.keyPrefix }}
- name: REDIS_KEY_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "lunos-bots.envFrom" -}}
- secretRef:
    name: {{ include "lunos-bots.secretName" . }}
{{- end }}

{{/* Pod annotations: roll the pods when the definitions or the chart-made Secret change. */}}
{{- define "lunos-bots.podAnnotations" -}}
checksum/definitions: {{ toYaml .Values.bots.definitions | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ toYaml .Values.secrets.values | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Seconds from the pod's deletion to SIGKILL: the preStop sleep, then SHUTDOWN_GRACE_S for the
drain, then a margin for the process to exit. Derived, never set on its own, so the two cannot drift. */}}
{{- define "lunos-bots.terminationGrace" -}}
{{- add (int .Values.preStopSleepSeconds) (int .Values.shutdownGraceSeconds) (int .Values.shutdownExitMarginSeconds) }}
{{- end }}

{{/* Pod-level settings shared by both workloads. */}}
{{- define "lunos-bots.podSpecCommon" -}}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ include "lunos-bots.terminationGrace" . }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Probes and lifecycle shared by both workloads' bot container. */}}
{{- define "lunos-bots.containerCommon" -}}
ports:
  - name: http
    containerPort: {{ .Values.containerPort }}
    protocol: TCP
startupProbe:
  tcpSocket:
    port: http
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
{{- if .Values.preStopSleepSeconds }}
lifecycle:
  preStop:
    exec:
      command: ["sleep", {{ .Values.preStopSleepSeconds | toString | quote }}]
{{- end }}
{{- with .Values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
