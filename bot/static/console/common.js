/* The console's shared script: the logged-in user, the JSON API, the header, a DOM builder and
   dates in Asia/Shanghai. Pages load it before their own script. Nothing here writes HTML from
   data: text goes in as text nodes. */
(function () {
  "use strict";

  var meCache = null;

  /** GET /api/console/me, once per page (a promise of the user, or null when logged out). */
  function me() {
    if (meCache === null) {
      meCache = fetch("/api/console/me", {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      }).then(function (response) {
        if (response.status === 401) {
          return null;
        }
        return response.json();
      });
    }
    return meCache;
  }

  /** Sends a JSON request; resolves {ok, status, data}. Adds X-CSRF-Token on non-GET. A 401
      sends the page to the login, coming back here afterwards. */
  function api(method, path, body) {
    method = (method || "GET").toUpperCase();
    var send = function (token) {
      var headers = { Accept: "application/json" };
      var init = { method: method, credentials: "same-origin", headers: headers };
      if (method !== "GET" && method !== "HEAD") {
        headers["Content-Type"] = "application/json";
        if (token) {
          headers["X-CSRF-Token"] = token;
        }
        init.body = JSON.stringify(body === undefined ? {} : body);
      }
      return fetch(path, init).then(function (response) {
        return response
          .json()
          .catch(function () {
            return {};
          })
          .then(function (data) {
            return { ok: response.ok, status: response.status, data: data };
          });
      });
    };
    if (method === "GET" || method === "HEAD") {
      return send(null);
    }
    return me().then(function (user) {
      return send(user ? user.csrf_token : null);
    });
  }

  /** Builds an element: attrs may hold class, text, on<event> handlers and attributes;
      children are nodes or strings (as text). */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    var key;
    attrs = attrs || {};
    for (key in attrs) {
      if (!Object.prototype.hasOwnProperty.call(attrs, key)) {
        continue;
      }
      var value = attrs[key];
      if (value === null || value === undefined || value === false) {
        continue;
      }
      if (key === "class") {
        node.className = value;
      } else if (key === "text") {
        node.textContent = String(value);
      } else if (key.slice(0, 2) === "on" && typeof value === "function") {
        node.addEventListener(key.slice(2).toLowerCase(), value);
      } else if (value === true) {
        node.setAttribute(key, "");
      } else {
        node.setAttribute(key, String(value));
      }
    }
    for (var i = 2; i < arguments.length; i += 1) {
      append(node, arguments[i]);
    }
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) {
      return;
    }
    if (Array.isArray(child)) {
      child.forEach(function (item) {
        append(node, item);
      });
    } else if (typeof child === "string" || typeof child === "number") {
      node.appendChild(document.createTextNode(String(child)));
    } else {
      node.appendChild(child);
    }
  }

  var ZONE = "Asia/Shanghai";

  function parts(value, options) {
    var date = value instanceof Date ? value : new Date(value);
    if (isNaN(date.getTime())) {
      return "";
    }
    return new Intl.DateTimeFormat("zh-CN", Object.assign({ timeZone: ZONE, hour12: false }, options)).format(date);
  }

  /** "2026-12-04 18:30" in Asia/Shanghai. */
  function formatDateTime(value) {
    if (!value) {
      return "";
    }
    var date = value instanceof Date ? value : new Date(value);
    if (isNaN(date.getTime())) {
      return "";
    }
    var fields = {};
    new Intl.DateTimeFormat("en-CA", {
      timeZone: ZONE,
      hour12: false,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
    })
      .formatToParts(date)
      .forEach(function (part) {
        fields[part.type] = part.value;
      });
    var hour = fields.hour === "24" ? "00" : fields.hour;
    return fields.year + "-" + fields.month + "-" + fields.day + " " + hour + ":" + fields.minute;
  }

  /** "2026-12-04" in Asia/Shanghai. */
  function formatDate(value) {
    return formatDateTime(value).slice(0, 10);
  }

  /** "还剩 3 小时" / "超期 2 天": the time left until a deadline, in words. */
  function timeLeft(value, now) {
    if (!value) {
      return "";
    }
    var left = new Date(value).getTime() - (now ? now.getTime() : Date.now());
    var minutes = Math.round(Math.abs(left) / 60000);
    var words;
    if (minutes < 60) {
      words = minutes + " 分钟";
    } else if (minutes < 48 * 60) {
      words = Math.round(minutes / 60) + " 小时";
    } else {
      words = Math.round(minutes / 1440) + " 天";
    }
    return left >= 0 ? "还剩 " + words : "超期 " + words;
  }

  var NAV = [
    { key: "queue", label: "待办队列", href: "/console" },
    { key: "dashboard", label: "数据看板", href: "/console/dashboard", roles: ["leader", "admin"] },
    { key: "account", label: "我的账号", href: "/console/account" },
  ];

  /** Renders the header into <header id="console-header"> (made when missing): the links the
      user may open, who is logged in, and 退出. */
  function nav(active) {
    return me().then(function (user) {
      if (!user) {
        window.location.assign("/console/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
        return null;
      }
      var header = document.getElementById("console-header");
      if (!header) {
        header = el("header", { id: "console-header" });
        document.body.insertBefore(header, document.body.firstChild);
      }
      header.className = "console-header";
      header.textContent = "";
      var links = el("nav", { class: "console-nav", "aria-label": "工作台导航" });
      NAV.forEach(function (item) {
        if (item.roles && item.roles.indexOf(user.role) < 0) {
          return;
        }
        links.appendChild(
          el("a", {
            href: item.href,
            class: item.key === active ? "console-nav-link is-active" : "console-nav-link",
            "aria-current": item.key === active ? "page" : null,
            text: item.label,
          })
        );
      });
      var logout = el("button", {
        type: "button",
        class: "btn btn-ghost btn-small",
        id: "console-logout",
        text: "退出",
        onclick: function () {
          api("POST", "/api/console/logout", {}).then(function () {
            window.location.assign("/console/login");
          });
        },
      });
      var centre = user.centre ? user.centre.name : "";
      header.appendChild(el("a", { href: "/console", class: "console-brand", text: "党群服务中心 · 工作台" }));
      header.appendChild(links);
      header.appendChild(
        el(
          "div",
          { class: "console-user" },
          el("span", { class: "console-user-name", text: user.name || user.username }),
          el("span", { class: "console-user-role", text: user.role_label + (centre ? " · " + centre : "") }),
          logout
        )
      );
      return user;
    });
  }

  /** Shows a message in an element with role=status or alert (text only). */
  function say(node, message, kind) {
    if (!node) {
      return;
    }
    node.textContent = message || "";
    node.className = "console-message" + (kind ? " is-" + kind : "");
    node.hidden = !message;
  }

  window.Console = {
    me: me,
    api: api,
    nav: nav,
    el: el,
    say: say,
    formatDateTime: formatDateTime,
    formatDate: formatDate,
    formatTime: function (value) {
      return formatDateTime(value).slice(11);
    },
    timeLeft: timeLeft,
    zoned: parts,
  };
})();
