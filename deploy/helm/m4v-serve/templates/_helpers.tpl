{{/*
Names. Every object name stays within 63 characters (DNS label); a component suffix is never cut off, the
release part is shortened instead, so api/worker/redis names stay distinct with any release name.
*/}}
{{- define "m4v-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "m4v-serve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>", fullname shortened so the whole fits 63. Call with (dict "root" $ "component" "api"). */}}
{{- define "m4v-serve.componentName" -}}
{{- $suffix := .component }}
{{- $base := include "m4v-serve.fullname" .root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "m4v-serve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. Call with (dict "root" $ "component" "api"). */}}
{{- define "m4v-serve.labels" -}}
helm.sh/chart: {{ include "m4v-serve.chart" .root }}
{{ include "m4v-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: m4v-serve
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "m4v-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "m4v-serve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "m4v-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "m4v-serve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference; call with (dict "root" $ "image" .Values.api.image) */}}
{{- define "m4v-serve.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "m4v-serve.configMapName" -}}
{{- include "m4v-serve.componentName" (dict "root" . "component" "config") }}
{{- end }}

{{- define "m4v-serve.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "m4v-serve.componentName" (dict "root" . "component" "secret") }}
{{- end }}
{{- end }}

{{- define "m4v-serve.redisName" -}}
{{- include "m4v-serve.componentName" (dict "root" . "component" "redis") }}
{{- end }}

{{/* The settings key prefix: rq queues are <prefix>-high/-normal/-low. */}}
{{- define "m4v-serve.keyPrefix" -}}
{{- default "m4v" .Values.settings.key_prefix }}
{{- end }}

{{/*
M4V_REDIS_URL as an env entry. In-chart Redis: the URL is composed from REDIS_PASSWORD (from the Secret,
listed first so that Kubernetes expands $(REDIS_PASSWORD)); external: from the Secret, because an external
URL may carry a password.
*/}}
{{- define "m4v-serve.redisUrlEnv" -}}
{{- if .Values.redis.internal.enabled }}
{{- $hostPort := printf "%s:%d" (include "m4v-serve.redisName" .) (int .Values.redis.internal.port) }}
{{- if .Values.redis.internal.auth.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "m4v-serve.secretName" . }}
      key: REDIS_PASSWORD
- name: M4V_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s/0" $hostPort | quote }}
{{- else }}
- name: M4V_REDIS_URL
  value: {{ printf "redis://%s/0" $hostPort | quote }}
{{- end }}
{{- else }}
- name: M4V_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "m4v-serve.secretName" . }}
      key: M4V_REDIS_URL
{{- end }}
{{- end }}

{{/*
The in-chart Redis password: secrets.redisPassword, else the one already in the release's Secret (kept
across upgrades), else a new random one (URL-safe: it goes into M4V_REDIS_URL).
*/}}
{{- define "m4v-serve.redisPassword" -}}
{{- if .Values.secrets.redisPassword }}
{{- .Values.secrets.redisPassword }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "m4v-serve.secretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "REDIS_PASSWORD") }}
{{- index $existing.data "REDIS_PASSWORD" | b64dec }}
{{- else }}
{{- randAlphaNum 40 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret-backed settings; optional so that IAM-role S3 access and releases without webhooks work. */}}
{{- define "m4v-serve.secretEnv" -}}
{{- $secret := include "m4v-serve.secretName" . }}
{{- range $env := list "M4V_S3_ACCESS_KEY" "M4V_S3_SECRET_KEY" "M4V_WEBHOOK_SECRET" "M4V_WEBHOOK_SECRET_PREVIOUS" "M4V_API_KEYS" "M4V_METRICS_TOKEN" }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $env }}
      optional: true
{{- end }}
{{- end }}

{{/* Checks that make a wrong combination fail at render time rather than in a crash-looping pod. */}}
{{- define "m4v-serve.validate" -}}
{{- if and (not .Values.redis.internal.enabled) (not .Values.redis.url) (not .Values.secrets.existingSecret) }}
{{- fail "redis: set redis.url (external Redis), or redis.internal.enabled=true, or secrets.existingSecret holding M4V_REDIS_URL" }}
{{- end }}
{{- if and .Values.weights.s3Url .Values.weights.pvc.weightsSubPath }}
{{- fail "weights: set weights.s3Url or weights.pvc.weightsSubPath, not both" }}
{{- end }}
{{- if and .Values.weights.s3Url (not (hasPrefix "s3://" .Values.weights.s3Url)) }}
{{- fail (printf "weights.s3Url must start with s3:// (got %q)" .Values.weights.s3Url) }}
{{- end }}
{{- if and .Values.weights.pvc.enabled (not .Values.weights.pvc.existingClaim) }}
{{- fail "weights.pvc.enabled needs weights.pvc.existingClaim (a PVC holding the checkpoint)" }}
{{- end }}
{{- if and .Values.keda.enabled (not .Values.redis.internal.enabled) (not .Values.keda.redis.address) }}
{{- fail "keda: set keda.redis.address (host:port of the external Redis, as KEDA reaches it)" }}
{{- end }}
{{- if and (eq (toString .Values.settings.parallel) "cfg") (lt (int .Values.worker.gpu.count) 2) }}
{{- fail (printf "settings.parallel=cfg runs one job on 2 GPUs: set worker.gpu.count to 2 (got %v)" .Values.worker.gpu.count) }}
{{- end }}
{{- range $k, $v := .Values.settings }}
{{- if has $k (list "redis_url" "s3_access_key" "s3_secret_key" "webhook_secret" "api_keys") }}
{{- fail (printf "settings.%s is a secret or chart-managed value: use secrets.* / redis.url" $k) }}
{{- end }}
{{- end }}
{{- end }}
