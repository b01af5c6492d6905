/* The console's login, setup and account pages (body data-page: login | setup | account). */
(function () {
  "use strict";

  var C = window.Console;

  function byId(id) {
    return document.getElementById(id);
  }

  /** Where to go after the login: ?next= when it is a path of this site, else the queue. */
  function nextPath() {
    var next = new URLSearchParams(window.location.search).get("next") || "";
    // Only a local path: "/x", never "//host" or "/\host" (which browsers read as a host).
    if (/^\/(?![\/\\])/.test(next) && next.indexOf("\\") < 0) {
      return next;
    }
    return "/console";
  }

  function messageOf(result, fallback) {
    return (result.data && result.data.message) || fallback;
  }

  function loginPage() {
    var form = byId("login-form");
    var message = byId("login-message");
    var submit = byId("login-submit");
    byId("username").focus();
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var username = byId("username").value.trim();
      var password = byId("password").value;
      if (!username || !password) {
        C.say(message, "请输入用户名和密码。", "error");
        return;
      }
      submit.disabled = true;
      C.api("POST", "/api/console/login", { username: username, password: password })
        .then(function (result) {
          if (result.ok) {
            window.location.assign(nextPath());
            return;
          }
          byId("password").value = "";
          C.say(message, messageOf(result, "登录失败，请稍后重试。"), "error");
          byId("password").focus();
        })
        .catch(function () {
          C.say(message, "网络错误，请稍后重试。", "error");
        })
        .then(function () {
          submit.disabled = false;
        });
    });
  }

  function setupPage() {
    var token = new URLSearchParams(window.location.search).get("token") || "";
    // The token is kept in memory only: the address bar and history lose it.
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", window.location.pathname);
    }
    var form = byId("setup-form");
    var message = byId("setup-message");
    var submit = byId("setup-submit");
    if (!token) {
      C.say(message, "设置密码链接不完整，请使用管理员发给您的完整链接。", "error");
      submit.disabled = true;
      return;
    }
    byId("new-password").focus();
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var password = byId("new-password").value;
      if (password !== byId("confirm-password").value) {
        C.say(message, "两次输入的密码不一致。", "error");
        return;
      }
      submit.disabled = true;
      C.api("POST", "/api/console/setup", { token: token, password: password })
        .then(function (result) {
          if (result.ok) {
            form.hidden = true;
            C.say(message, "");
            byId("setup-done").hidden = false;
            byId("to-login").focus();
            return;
          }
          C.say(message, messageOf(result, "设置失败，请稍后重试。"), "error");
          submit.disabled = false;
        })
        .catch(function () {
          C.say(message, "网络错误，请稍后重试。", "error");
          submit.disabled = false;
        });
    });
  }

  function fact(list, term, value) {
    list.appendChild(C.el("dt", { text: term }));
    list.appendChild(C.el("dd", { text: value || "—" }));
  }

  function accountPage() {
    C.nav("account").then(function (user) {
      if (!user) {
        return;
      }
      var facts = byId("account-facts");
      facts.textContent = "";
      fact(facts, "用户名", user.username);
      fact(facts, "姓名", user.name);
      fact(facts, "身份", user.role_label);
      fact(facts, "所在中心", user.centre ? user.centre.name : "");
      if (user.department) {
        fact(facts, "部门", user.department);
      }
      loadChats();
    });

    byId("make-code").addEventListener("click", function () {
      var button = byId("make-code");
      button.disabled = true;
      C.api("POST", "/api/console/link-code", {})
        .then(function (result) {
          if (!result.ok) {
            C.say(byId("link-message"), messageOf(result, "生成失败，请稍后重试。"), "error");
            return;
          }
          showCode(result.data);
        })
        .then(function () {
          button.disabled = false;
        });
    });

    byId("logout-everywhere").addEventListener("click", function () {
      if (!window.confirm("确定退出所有设备吗？包括当前页面。")) {
        return;
      }
      C.api("POST", "/api/console/logout", { everywhere: true }).then(function () {
        window.location.assign("/console/login");
      });
    });
  }

  var HOW = {
    telegram: "在 Telegram 中向机器人发送",
    wechat: "在微信公众号中发送",
    wecom: "在企业微信应用中发送",
    web: "在网页咨询台（/desk）中发送",
  };

  function showCode(data) {
    C.say(byId("link-message"), "");
    byId("code-box").hidden = false;
    byId("link-code").textContent = data.code;
    byId("code-expiry").textContent = C.formatDateTime(data.expires_at);
    var how = byId("code-how");
    how.textContent = "";
    (data.channels || []).forEach(function (channel) {
      how.appendChild(
        C.el(
          "li",
          null,
          (HOW[channel.name] || "在「" + channel.label + "」中发送") + "：",
          C.el("code", { class: "command", text: "绑定 " + data.code })
        )
      );
    });
  }

  function loadChats() {
    C.api("GET", "/api/console/identities").then(function (result) {
      var body = byId("chats");
      body.textContent = "";
      var items = (result.ok && result.data.items) || [];
      byId("chats-empty").hidden = items.length > 0;
      byId("chats-table").hidden = items.length === 0;
      items.forEach(function (item) {
        var actions = C.el("td", { class: "chat-actions" });
        if (!item.notify) {
          actions.appendChild(
            C.el("button", {
              type: "button",
              class: "btn btn-small",
              text: "设为通知",
              "data-id": item.id,
              onclick: function () {
                choose(item.id);
              },
            })
          );
        }
        if (!item.own) {
          actions.appendChild(
            C.el("button", {
              type: "button",
              class: "btn btn-small btn-ghost",
              text: "解除关联",
              onclick: function () {
                unlinkChat(item);
              },
            })
          );
        }
        body.appendChild(
          C.el(
            "tr",
            { "data-id": item.id },
            C.el("td", { text: item.channel_label }),
            C.el("td", { text: item.name || "（未命名）" }),
            C.el("td", { text: item.notify ? "✔ 接收通知" : item.unreachable ? "无法送达" : "" }),
            actions
          )
        );
      });
    });
  }

  function choose(id) {
    C.api("POST", "/api/console/notify", { person_id: id }).then(function (result) {
      C.say(byId("chats-message"), result.ok ? "已设为通知聊天。" : messageOf(result, "设置失败。"), result.ok ? "ok" : "error");
      loadChats();
    });
  }

  function unlinkChat(item) {
    if (!window.confirm("确定解除与「" + (item.name || item.channel_label) + "」的关联吗？")) {
      return;
    }
    C.api("POST", "/api/console/identities/" + encodeURIComponent(item.id) + "/unlink", {}).then(function (result) {
      C.say(byId("chats-message"), result.ok ? "已解除关联。" : messageOf(result, "解除失败。"), result.ok ? "ok" : "error");
      loadChats();
    });
  }

  var pages = { login: loginPage, setup: setupPage, account: accountPage };
  var page = pages[document.body.getAttribute("data-page")];
  if (page) {
    page();
  }
})();
