/* A request's page: everything about one request, its history, and the actions the user may
   take now (GET /api/console/requests/{number}); an action posts to .../actions and the page
   shows the answer, or why it was refused. Text from data always goes in as text. */
(function () {
  "use strict";

  var C = window.Console;
  var el = C.el;
  var number = decodeURIComponent(window.location.pathname.split("/").pop() || "");
  var current = null; // the action whose form is open
  var busy = false;

  function $(id) {
    return document.getElementById(id);
  }

  function apiPath() {
    return "/api/console/requests/" + encodeURIComponent(number);
  }

  function fact(list, term, value) {
    if (value === null || value === undefined || value === "") {
      return;
    }
    list.appendChild(el("dt", { text: term }));
    list.appendChild(el("dd", {}, value));
  }

  function deadline(title, item) {
    if (!item) {
      return null;
    }
    var words;
    var kind = "";
    if (!item.running) {
      words = "已完成";
    } else {
      words = C.timeLeft(item.due_at);
      kind = item.overdue ? " is-overdue" : item.seconds_left < 4 * 3600 ? " is-soon" : "";
    }
    return el(
      "p",
      { class: "request-deadline" + kind },
      el("span", { class: "request-deadline-title", text: title + "：" }),
      el("time", { datetime: item.due_at, text: C.formatDateTime(item.due_at) }),
      el("span", { class: "request-deadline-left", text: "（" + words + "）" })
    );
  }

  function renderFacts(data) {
    $("request-number").textContent = data.number;
    var state = $("request-state");
    state.textContent = data.state_label;
    state.className = "request-state is-" + data.state;
    document.title = data.number + " · 诉求详情";
    $("request-text").textContent = data.text;
    var facts = $("request-facts");
    facts.textContent = "";
    fact(facts, "类别", data.category);
    fact(facts, "所属中心", data.centre ? data.centre.name + "（" + data.centre.code + "）" : "");
    fact(facts, "承办部门", data.department);
    fact(facts, "来源渠道", data.channel_label);
    fact(facts, "提交时间", C.formatDateTime(data.created_at));
    var who = data.requester.name || "—";
    if (data.requester.phone) {
      who += " · " + data.requester.phone;
    }
    fact(facts, "群众", [who, data.requester.masked ? el("span", { class: "hint", text: "（已脱敏）" }) : null]);
    fact(facts, "办理结果", data.result);
    var deadlines = $("request-deadlines");
    deadlines.textContent = "";
    [deadline("响应时限", data.deadlines.response), deadline("办结时限", data.deadlines.resolution)].forEach(function (node) {
      if (node) {
        deadlines.appendChild(node);
      }
    });
  }

  function attachmentBody(item) {
    var name = item.name || item.label || item.kind_label;
    if (item.media === "location") {
      var coords = Number(item.latitude).toFixed(6) + ", " + Number(item.longitude).toFixed(6);
      return el(
        "div",
        { class: "request-location" },
        item.label ? el("p", { text: item.label }) : null,
        el("p", {}, "坐标：", el("span", { class: "request-coords", text: coords })),
        el("a", { href: item.map_url, target: "_blank", rel: "noopener noreferrer", text: "在地图上查看" })
      );
    }
    if (item.media === "contact") {
      return el("p", { text: item.label || "联系人" });
    }
    if (!item.url) {
      return el("p", { class: "hint", text: item.status === "gone" ? "该附件已无法获取" : "附件尚未下载完成，请稍后刷新" });
    }
    if (item.media === "image") {
      return el(
        "a",
        { href: item.url, target: "_blank", rel: "noopener", class: "request-photo" },
        el("img", { src: item.url, alt: item.kind_label + (item.name ? "：" + item.name : ""), loading: "lazy" })
      );
    }
    if (item.media === "audio") {
      return el("audio", { controls: true, preload: "none", src: item.url, "aria-label": item.kind_label });
    }
    if (item.media === "video") {
      return el("video", { controls: true, preload: "metadata", src: item.url, "aria-label": item.kind_label });
    }
    return el("a", { href: item.url, download: item.name || "", text: "下载：" + name });
  }

  function renderAttachments(items) {
    var list = $("attachments");
    list.textContent = "";
    $("attachments-card").hidden = items.length === 0;
    items.forEach(function (item) {
      list.appendChild(
        el(
          "li",
          { class: "request-attachment is-" + item.media },
          el(
            "p",
            { class: "request-attachment-head" },
            el("strong", { text: item.kind_label }),
            item.created_at ? el("span", { class: "hint", text: " " + C.formatDateTime(item.created_at) }) : null
          ),
          attachmentBody(item)
        )
      );
    });
  }

  function renderHistory(events) {
    var list = $("history");
    list.textContent = "";
    events.forEach(function (event) {
      var move = "";
      if (event.from_label && event.to_label && event.from_state !== event.to_state) {
        move = event.from_label + " → " + event.to_label;
      } else if (!event.from_label && event.to_label) {
        move = event.to_label;
      }
      list.appendChild(
        el(
          "li",
          { class: "request-event" + (event.action === "comment" ? " is-note" : "") },
          el(
            "p",
            { class: "request-event-head" },
            el("time", { datetime: event.at, text: C.formatDateTime(event.at) }),
            " ",
            el("strong", { text: event.action === "comment" ? "内部备注" : event.action_label }),
            " ",
            el("span", { class: "request-event-who", text: event.who.label }),
            event.internal ? el("span", { class: "request-badge", text: "仅工作人员可见" }) : null
          ),
          move ? el("p", { class: "request-event-move", text: move }) : null,
          event.note ? el("p", { class: "request-event-note", text: event.note }) : null
        )
      );
    });
  }

  function option(value, label) {
    return el("option", { value: value, text: label });
  }

  function openForm(item, button) {
    current = item;
    var form = $("action-form");
    $("action-form-title").textContent = item.label + " " + number;
    $("action-field-department").hidden = item.field !== "department";
    $("action-field-centre").hidden = item.field !== "centre";
    $("action-field-text").hidden = item.field !== "text";
    if (item.field === "department") {
      var select = $("action-department");
      select.textContent = "";
      select.appendChild(option("", "请选择部门"));
      item.departments.forEach(function (d) {
        select.appendChild(option(d.name, d.name));
      });
    } else if (item.field === "centre") {
      var centres = $("action-centre");
      centres.textContent = "";
      centres.appendChild(option("", "请选择下级中心"));
      item.centres.forEach(function (c) {
        centres.appendChild(option(c.code, c.name + "（" + c.code + "）"));
      });
    } else if (item.field === "text") {
      $("action-text-label").textContent = item.ask || "内容";
      $("action-text").value = "";
    }
    $("action-submit").textContent = "确定" + item.label;
    form.hidden = false;
    form.dataset.opener = button.id;
    var first = form.querySelector(".request-field:not([hidden]) select, .request-field:not([hidden]) textarea");
    (first || $("action-submit")).focus();
  }

  function closeForm() {
    var form = $("action-form");
    var opener = form.dataset.opener ? $(form.dataset.opener) : null;
    form.hidden = true;
    current = null;
    if (opener) {
      opener.focus();
    }
  }

  function send(item, fields) {
    if (busy) {
      return;
    }
    busy = true;
    var buttons = document.querySelectorAll("#action-buttons button, #action-submit");
    Array.prototype.forEach.call(buttons, function (b) {
      b.disabled = true;
    });
    var body = Object.assign({ action: item.action }, fields);
    C.api("POST", apiPath() + "/actions", body).then(
      function (result) {
        busy = false;
        Array.prototype.forEach.call(buttons, function (b) {
          b.disabled = false;
        });
        var message = (result.data && result.data.message) || (result.ok ? "已完成。" : "操作未成功，请稍后重试。");
        if (result.ok) {
          $("action-form").hidden = true;
          current = null;
          load().then(function () {
            $("action-message").setAttribute("role", "status");
            C.say($("action-message"), message, "ok");
            $("action-message").focus();
          });
        } else {
          C.say($("action-message"), message, "error");
          $("action-message").setAttribute("role", "alert");
        }
      },
      function () {
        busy = false;
        Array.prototype.forEach.call(buttons, function (b) {
          b.disabled = false;
        });
        C.say($("action-message"), "网络连接失败，请稍后重试。", "error");
      }
    );
  }

  function renderActions(actions) {
    var row = $("action-buttons");
    row.textContent = "";
    $("actions-none").hidden = actions.length > 0;
    actions.forEach(function (item) {
      var button = el("button", {
        type: "button",
        class: item.action === "note" || item.action === "recall" ? "btn btn-ghost" : "btn",
        id: "action-" + item.action,
        "data-action": item.action,
        text: item.label,
      });
      button.addEventListener("click", function () {
        C.say($("action-message"), "");
        if (item.field) {
          openForm(item, button);
        } else {
          send(item, {});
        }
      });
      row.appendChild(button);
    });
    if (current && !actions.some(function (a) { return a.action === current.action; })) {
      $("action-form").hidden = true;
      current = null;
    }
  }

  function load() {
    return C.api("GET", apiPath()).then(function (result) {
      $("request-loading").hidden = true;
      if (!result.ok) {
        $("request").hidden = true;
        C.say($("request-error"), (result.data && result.data.message) || "无法载入该诉求。", "error");
        return;
      }
      var data = result.data;
      renderFacts(data);
      renderActions(data.actions);
      renderAttachments(data.attachments);
      renderHistory(data.events);
      $("request").hidden = false;
    });
  }

  function start() {
    $("action-form").addEventListener("submit", function (event) {
      event.preventDefault();
      if (!current) {
        return;
      }
      var fields = {};
      if (current.field === "department") {
        fields.department = $("action-department").value;
      } else if (current.field === "centre") {
        fields.centre = $("action-centre").value;
      } else if (current.field === "text") {
        fields.text = $("action-text").value;
      }
      send(current, fields);
    });
    $("action-cancel").addEventListener("click", closeForm);
    $("action-form").addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        closeForm();
      }
    });
    C.nav("queue").then(function (user) {
      if (user) {
        load();
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
