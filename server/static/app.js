// Live updates: the server sends an event whenever a request changes; each section marked
// data-live is fetched again (server-rendered HTML). A section holding the focused input is
// left alone until the input loses focus, so a reason being typed is not wiped.
(function () {
  'use strict';
  var timer = null;
  var waiting = false;
  function busy(el) {
    var a = document.activeElement;
    return a && el.contains(a) && (a.tagName === 'INPUT' || a.tagName === 'SELECT' || a.tagName === 'TEXTAREA') && a.value !== '';
  }
  function refresh() {
    var live = document.querySelectorAll('[data-live]');
    live.forEach(function (el) {
      if (busy(el)) { waiting = true; return; }
      fetch(el.getAttribute('data-live'), { credentials: 'same-origin', cache: 'no-store' })
        .then(function (r) {
          if (r.status === 401) { window.location.href = '/login?next=' + encodeURIComponent(window.location.pathname); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) { if (html !== null && html !== undefined) { el.innerHTML = html; } });
    });
  }
  document.addEventListener('focusout', function () { if (waiting) { waiting = false; setTimeout(refresh, 50); } });
  if (!window.EventSource || !document.querySelector('[data-live]')) { return; }
  var es = new EventSource('/events');
  es.addEventListener('change', function () {
    clearTimeout(timer);
    timer = setTimeout(refresh, 100);
  });
  es.addEventListener('ended', function () { es.close(); window.location.href = '/login'; });
  document.documentElement.setAttribute('data-live-ready', '1');
})();
