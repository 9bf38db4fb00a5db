{{- define "llmgw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmgw.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "llmgw.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "llmgw.image" -}}
{{- printf "%s-%s:%s" .root.Values.image.repository .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "llmgw.addr" -}}
{{- printf "%s-%s:%v" (include "llmgw.fullname" .root) .name .port -}}
{{- end -}}

{{/* Env every component shares. */}}
{{- define "llmgw.commonEnv" -}}
- name: HOST
  value: "0.0.0.0"
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: METRICS_PORT
  value: {{ .Values.metricsPort | quote }}
- name: SHUTDOWN_GRACE_S
  value: {{ .Values.shutdownGraceSeconds | quote }}
{{- with .Values.tracing }}
{{- if .endpoint }}
{{/* OpenTelemetry traces to the collector ops already run (docs/operations.md "Traces"). */}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .samplerArg | quote }}
- name: OTEL_BSP_MAX_QUEUE_SIZE
  value: {{ .maxQueueSize | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "llmgw.redisEnv" -}}
{{ include "llmgw.redisEnvAs" (dict "root" . "prefix" "") }}
{{- end -}}

{{/* Redis settings under a prefix: a colocated ingress reads the limiter's as LIMITER_REDIS_URL. */}}
{{- define "llmgw.redisEnvAs" -}}
- name: {{ .prefix }}REDIS_URL
  value: {{ .root.Values.redis.url | quote }}
{{- if .root.Values.redis.passwordSecret }}
- name: {{ .prefix }}REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .root.Values.redis.passwordSecret | quote }}, key: {{ .root.Values.redis.passwordKey | quote }}}
{{- end }}
{{- end -}}

{{/* The key store (docs/keys.md) under a prefix: the ingress and limiter read KEYS_*, a
     colocated ingress's limiter core LIMITER_KEYS_*. */}}
{{- define "llmgw.keysEnvAs" -}}
{{ include "llmgw.redisEnvAs" (dict "root" .root "prefix" (printf "%sKEYS_" .prefix)) }}
- name: {{ .prefix }}KEYS_PREFIX
  value: {{ .root.Values.ingress.keys.prefix | quote }}
- name: {{ .prefix }}KEYS_POLL_S
  value: {{ .root.Values.ingress.keys.pollSeconds | toString | quote }}
{{- end -}}

{{- define "llmgw.kafkaEnv" -}}
- name: KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.saslMechanism | quote }}
{{- if .Values.kafka.saslSecret }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .Values.kafka.saslSecret | quote }}, key: {{ .Values.kafka.saslUsernameKey | quote }}}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.kafka.saslSecret | quote }}, key: {{ .Values.kafka.saslPasswordKey | quote }}}
{{- end }}
{{- end -}}

{{/*
One gRPC component: Deployment + Service + PodDisruptionBudget.
Args: root (the top context), name, c (its values), env (extra env, YAML list), volumes,
mounts (YAML lists), service (bool).
*/}}
{{- define "llmgw.component" -}}
{{- $root := .root -}}
{{- $fullname := include "llmgw.fullname" $root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}-{{ .name }}
  labels:
    {{- include "llmgw.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .name }}
spec:
  {{- if not (and .c.hpa .c.hpa.enabled) }}
  replicas: {{ .c.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "llmgw.selector" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  template:
    metadata:
      labels:
        {{- include "llmgw.selector" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmaps.yaml") $root | sha256sum }}
    spec:
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "llmgw.image" . }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - {name: grpc, containerPort: {{ .c.port }}, protocol: TCP}
            {{- if and (hasKey .c "httpPort") (ge (int .c.httpPort) 0) }}
            - {name: http, containerPort: {{ .c.httpPort }}, protocol: TCP}
            {{- end }}
            - {name: metrics, containerPort: {{ $root.Values.metricsPort }}, protocol: TCP}
          env:
            - name: PORT
              value: {{ .c.port | quote }}
            {{- include "llmgw.commonEnv" $root | nindent 12 }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- range $k, $v := .c.env }}
            - name: {{ $k }}
              value: {{ $v | quote }}
            {{- end }}
          # Native gRPC probes on grpc.health.v1: readiness follows the dependencies (Redis,
          # peers, Kafka assignment); liveness only asks whether the process serves at all.
          readinessProbe:
            grpc: {port: {{ .c.port }}}
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            grpc: {port: {{ .c.port }}, service: liveness}
            initialDelaySeconds: 10
            periodSeconds: 10
            failureThreshold: 3
          startupProbe:
            grpc: {port: {{ .c.port }}, service: liveness}
            periodSeconds: 2
            failureThreshold: 60
          resources:
            {{- toYaml .c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: {{ default 256 .c.tmpMiB }}Mi}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
{{- if .service }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}-{{ .name }}
  labels:
    {{- include "llmgw.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .name }}
spec:
  type: {{ default "ClusterIP" .c.serviceType }}
  selector:
    {{- include "llmgw.selector" . | nindent 4 }}
  ports:
    - {name: grpc, port: {{ .c.port }}, targetPort: grpc, protocol: TCP, appProtocol: grpc}
    {{- if and (hasKey .c "httpPort") (ge (int .c.httpPort) 0) }}
    - {name: http, port: {{ .c.httpPort }}, targetPort: http, protocol: TCP, appProtocol: http}
    {{- end }}
    - {name: metrics, port: {{ $root.Values.metricsPort }}, targetPort: metrics, protocol: TCP}
{{- end }}
{{- if .c.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullname }}-{{ .name }}
  labels:
    {{- include "llmgw.labels" $root | nindent 4 }}
spec:
  minAvailable: {{ .c.pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "llmgw.selector" . | nindent 6 }}
{{- end }}
{{- if and .c.hpa .c.hpa.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullname }}-{{ .name }}
  labels:
    {{- include "llmgw.labels" $root | nindent 4 }}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: {{ $fullname }}-{{ .name }}}
  minReplicas: {{ .c.hpa.minReplicas }}
  maxReplicas: {{ .c.hpa.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: {{ .c.hpa.targetCPUUtilizationPercentage }}}
{{- end }}
{{- end -}}
