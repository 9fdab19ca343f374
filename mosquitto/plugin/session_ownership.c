/*
 * Session ownership for Mosquitto 2.0 (plugin API v5), loaded before the dynamic-security plugin.
 *
 * Mosquitto ties a session to its client id alone: whoever connects with a known id takes the
 * session over (the connected owner is disconnected; with clean start its subscriptions and
 * queued messages are discarded). This plugin makes a client id belong to an account:
 *
 * - an id containing ':' is reserved: only the username before the first ':' may use it;
 * - a client that connects with a username must use an id reserved for it, `<username>:<any>`;
 * - an anonymous client must use an id without ':'.
 *
 * Usernames never contain ':' (buyers, `svc.*` services, `device.*` devices), so the rule needs
 * no state and holds across restarts. The check is made in MOSQ_EVT_BASIC_AUTH, which
 * Mosquitto 2.0 runs for every CONNECT, with or without a username (handle_connect.c:
 * handle__connect -> security.c: mosquitto_unpwd_check), and before the takeover itself
 * (connect__on_authorised). A refusal is MOSQ_ERR_AUTH: CONNACK "not authorised", and the
 * existing session, connected or not, is left as it was. A client that passes gets
 * MOSQ_ERR_PLUGIN_DEFER, so the dynamic-security plugin (next in line: the first answer that
 * is not DEFER wins) still checks the password.
 *
 * Anonymous sessions are bounded by MOSQ_EVT_ACL_CHECK: an anonymous SUBSCRIBE asking for a
 * QoS above `plugin_opt_anonymous_max_qos` (default 0) is refused. Mosquitto queues no QoS 0
 * message for a disconnected client (database.c: db__message_insert, queue_qos0_messages off),
 * so an abandoned anonymous session keeps what it had when it left and grows no further;
 * `persistent_client_expiration` in mosquitto.conf ends it.
 *
 * Free accounts are bounded the same way: with `plugin_opt_free_prefix` set (e.g. `avg/`), a
 * SUBSCRIBE asking for a QoS above `plugin_opt_free_max_qos` (default 0) is refused to every
 * client that is not a service (username `svc.*`, which buyers' usernames cannot be) when its
 * filter can match the free area: the prefix's topic itself or any topic under it, i.e. what
 * `<prefix>#` matches. So `avg/#`, `avg/1m/x/y`, `avg`, `#`, `+/#`, `+`, `+/+/+/+`, `+/1m/#`
 * and `$share/<group>/` forms of them are refused at QoS 1; `live/...`, `notify/...`, `avgx/#`,
 * `/avg/#` or `$SYS/#` are not. Mosquitto 2.0 cannot lower the QoS a plugin is asked for (the
 * ACL check only allows or denies; its per-client max_qos is one value for all filters), so the
 * client must ask again at QoS 0, which is granted (if dynamic security allows the filter).
 * Sessions holding such a subscription before this rule (restored from persistence) keep it.
 */

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* Of a refused client id only the owner part is logged, at most this long (usernames: 64). */
#define OWNER_SHOWN_MAX 64

/* Services may subscribe to the free area at any QoS: they are ours, and few. */
#define SERVICE_PREFIX "svc."

static mosquitto_plugin_id_t *plugin_id;
static int anonymous_max_qos;
/* The free area's topic levels, without a trailing '/' ("avg"); NULL: no free area. */
static char *free_prefix;
static int free_max_qos;

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

static void log_refusal(const struct mosquitto *client, const char *username, const char *id)
{
	const char *colon = strchr(id, ':');
	const char *address = mosquitto_client_address(client);
	int owner_len = colon ? (int)(colon - id) : 0;

	if (owner_len > OWNER_SHOWN_MAX) {
		owner_len = OWNER_SHOWN_MAX;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"session-ownership: refused %s%.64s%s from %s: its client id %s%.*s%s",
			username ? "user '" : "an anonymous client", username ? username : "",
			username ? "'" : "", address ? address : "?",
			colon ? "is reserved for '" : "is not in its namespace ('<username>:...')",
			owner_len, id, colon ? "'" : "");
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	const char *colon;
	size_t n;

	(void)event;
	(void)userdata;
	if (id == NULL) {
		return MOSQ_ERR_AUTH;
	}
	colon = strchr(id, ':');
	if (ed->username == NULL) {
		if (colon == NULL) {
			return MOSQ_ERR_PLUGIN_DEFER;
		}
	} else {
		n = strlen(ed->username);
		if (n > 0 && colon == id + n && strncmp(id, ed->username, n) == 0) {
			return MOSQ_ERR_PLUGIN_DEFER;
		}
	}
	log_refusal(ed->client, ed->username, id);
	return MOSQ_ERR_AUTH;
}

/*
 * Can the (valid) topic filter `filter` match a topic of the free area, `free_prefix` itself or
 * a topic under it? Level by level: `#` matches the rest, `+` any one level, other levels must
 * be equal; once all levels of the prefix are matched, whatever follows matches some topic.
 * A shared subscription `$share/<group>/<filter>` is judged by its <filter>. As in MQTT, a
 * wildcard in the first level does not match a level starting with '$'.
 */
static bool reaches_free_area(const char *filter)
{
	const char *f = filter, *p = free_prefix;
	bool first = true;

	if (strncmp(f, "$share/", 7) == 0) {
		f = strchr(f + 7, '/');
		if (f == NULL) {
			return false;
		}
		f++;
	}
	for (;;) {
		size_t flen = strcspn(f, "/"), plen = strcspn(p, "/");
		bool dollar = first && p[0] == '$';

		if (flen == 1 && f[0] == '#') {
			return !dollar;
		}
		if (flen == 1 && f[0] == '+') {
			if (dollar) {
				return false;
			}
		} else if (flen != plen || strncmp(f, p, flen) != 0) {
			return false;
		}
		first = false;
		f += flen;
		p += plen;
		if (*p == '\0') {
			return true;
		}
		if (*f == '\0') {
			return false; /* the filter ends above the prefix */
		}
		f++;
		p++;
	}
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username;

	(void)event;
	(void)userdata;
	if (ed->access != MOSQ_ACL_SUBSCRIBE) {
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	username = mosquitto_client_username(ed->client);
	if (username == NULL && ed->qos > anonymous_max_qos) {
		return MOSQ_ERR_ACL_DENIED;
	}
	if (free_prefix != NULL && ed->qos > free_max_qos
			&& (username == NULL || strncmp(username, SERVICE_PREFIX, strlen(SERVICE_PREFIX)) != 0)
			&& reaches_free_area(ed->topic)) {
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

/* "0", "1" or "2" into *qos; false (and an error logged) for anything else. */
static bool parse_qos(const char *key, const char *value, int *qos)
{
	char *end;
	long n = strtol(value, &end, 10);

	if (*value == '\0' || *end != '\0' || n < 0 || n > 2) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "session-ownership: %s must be 0, 1 or 2", key);
		return false;
	}
	*qos = (int)n;
	return true;
}

/* The free area's levels from `plugin_opt_free_prefix` ("avg/" or "avg": "avg"), or NULL. */
static char *parse_prefix(const char *value)
{
	size_t n = strlen(value);
	char *copy;

	while (n > 0 && value[n - 1] == '/') {
		n--;
	}
	if (n == 0 || strcspn(value, "+#") < n) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
				"session-ownership: free_prefix must be a topic without wildcards, like avg/");
		return NULL;
	}
	copy = mosquitto_malloc(n + 1);
	if (copy != NULL) {
		memcpy(copy, value, n);
		copy[n] = '\0';
	}
	return copy;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int rc;

	(void)userdata;
	anonymous_max_qos = 0;
	free_max_qos = 0;
	mosquitto_free(free_prefix);
	free_prefix = NULL;
	for (int i = 0; i < option_count; i++) {
		const char *key = options[i].key, *value = options[i].value;

		if (strcmp(key, "anonymous_max_qos") == 0) {
			if (!parse_qos(key, value, &anonymous_max_qos)) {
				return MOSQ_ERR_INVAL;
			}
		} else if (strcmp(key, "free_max_qos") == 0) {
			if (!parse_qos(key, value, &free_max_qos)) {
				return MOSQ_ERR_INVAL;
			}
		} else if (strcmp(key, "free_prefix") == 0) {
			mosquitto_free(free_prefix);
			free_prefix = parse_prefix(value);
			if (free_prefix == NULL) {
				return MOSQ_ERR_INVAL;
			}
		}
	}
	plugin_id = identifier;
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO,
			"session-ownership: client ids '<username>:...' reserved; anonymous: ids without "
			"':', subscriptions up to QoS %d", anonymous_max_qos);
	if (free_prefix != NULL) {
		mosquitto_log_printf(MOSQ_LOG_INFO,
				"session-ownership: filters reaching %s/# up to QoS %d but for '%s*' services",
				free_prefix, free_max_qos, SERVICE_PREFIX);
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_free(free_prefix);
	free_prefix = NULL;
	return MOSQ_ERR_SUCCESS;
}
