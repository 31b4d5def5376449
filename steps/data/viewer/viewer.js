/*
 * raw2ready web viewer: a map of one date's NDVI or LAI (XYZ tiles rendered by the server from the COGs),
 * a date slider, a click for a pixel's time series and a drawn field for its mean series (both from the
 * server's OGC API-EDR collections `ndvi` and `lai`). Plain JavaScript for current browsers, no build step;
 * the only library is the vendored Leaflet. Every URL is relative to the page (served at <root>/viewer).
 *
 * For tests and scripts the viewer exposes `window.raw2readyViewer`:
 *   map            the Leaflet map
 *   ready          true once the catalog summary is loaded and the map is set up
 *   lastSeries     the series of the last query: {kind: "point"|"area", wkt, requests: {ndvi, lai},
 *                  series: {ndvi: {t, values, counts?}, lai: {...}}, errors: {...}}
 *   setDate(i), setProduct(p), queryPoint(lat, lon), queryArea([[lat, lon], ...])
 * Every chart <svg> carries the last query's values as JSON in `data-times` and `data-values` (each plotted
 * series also in its <g class="r2r-series" data-kind=…>); `#r2r-series` counts completed queries in
 * `data-seq`; `document.body.dataset.tilesLoaded` is "<date>/<product>" once the map's tiles have loaded.
 * Charts show the last pixel and the last field together (a new click replaces the pixel, a new field
 * the field).
 */
(function () {
  'use strict';

  var SVGNS = 'http://www.w3.org/2000/svg';
  var COLLECTIONS = ['ndvi', 'lai'];
  var COLOURS = { ndvi: '#2e7d32', lai: '#9a6b00' };
  var FIELD_COLOUR = '#d63384';
  var CLOUD_CLASSES = { 0: 'clear', 1: 'cloud', 2: 'cirrus', 3: 'cloud shadow', 4: 'snow', 5: 'invalid',
    6: 'cloud buffer' };

  var state = {
    meta: null, product: 'ndvi', dateIndex: 0, overlay: null, outlines: null, marker: null, field: null,
    drawing: null, token: 0, seq: 0, lastStatusKeep: false,
    results: { point: null, area: null }
  };
  var api = {
    map: null, ready: false, lastSeries: null, state: state,
    setDate: setDate, setProduct: setProduct, queryPoint: queryPoint, queryArea: queryArea
  };
  window.raw2readyViewer = api;

  function $(id) { return document.getElementById(id); }

  function setStatus(text, isError) {
    var el = $('r2r-status');
    el.textContent = text;
    el.classList.toggle('text-danger', !!isError);
    el.classList.toggle('text-muted', !isError);
  }

  function fetchJSON(url) {
    return fetch(url, { headers: { Accept: 'application/json' } }).then(function (r) {
      return r.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (!r.ok) {
          var msg = (body && (body.description || body.detail)) || (r.status + ' ' + r.statusText);
          var err = new Error(msg);
          err.status = r.status;
          throw err;
        }
        if (body === null) { // 204: the EDR API found no acquisition there
          throw new Error('no scene covers this location');
        }
        return body;
      });
    });
  }

  function fmt(v, digits) { return Number(v).toFixed(digits); }
  function dayOf(iso) { return String(iso).slice(0, 10); }

  // ---------------------------------------------------------------------------------------- map
  function currentDate() { return state.meta.dates[state.dateIndex]; }

  function setDate(i) {
    var dates = state.meta.dates;
    if (!dates.length) { return; }
    i = Math.max(0, Math.min(dates.length - 1, Number(i)));
    state.dateIndex = i;
    var d = dates[i];
    $('r2r-date').value = String(i);
    $('r2r-date-label').textContent = d.date;
    $('r2r-date-tiles').textContent = '(' + d.tiles.join(', ') + ')';
    $('r2r-date-prev').disabled = i === 0;
    $('r2r-date-next').disabled = i === dates.length - 1;
    drawOverlay();
    redrawCharts();
  }

  function setProduct(p) {
    if (COLLECTIONS.indexOf(p) < 0) { return; }
    state.product = p;
    var radio = $('r2r-product-' + p);
    if (radio) { radio.checked = true; }
    drawLegend();
    drawOverlay();
  }

  function drawOverlay() {
    var map = api.map;
    var d = currentDate();
    if (state.overlay) { map.removeLayer(state.overlay); }
    if (state.outlines) { map.removeLayer(state.outlines); }
    var byId = {};
    state.meta.items.forEach(function (it) { byId[it.id] = it; });
    state.outlines = L.layerGroup(d.items.map(function (id) {
      var b = byId[id].bbox;
      return L.rectangle([[b[1], b[0]], [b[3], b[2]]], {
        color: '#0d6efd', weight: 1, dashArray: '4 4', fill: false, interactive: false
      });
    })).addTo(map);
    var t = state.meta.tiles;
    state.overlay = L.tileLayer(t.url, {
      key: d.date, product: state.product, tileSize: t.tilesize, minZoom: t.minzoom, maxZoom: t.maxzoom,
      bounds: L.latLngBounds([d.bbox[1], d.bbox[0]], [d.bbox[3], d.bbox[2]]), opacity: 0.95,
      attribution: 'Sentinel-2 products: raw2ready'
    });
    var shown = d.date + '/' + state.product;
    state.overlay.on('load', function () { document.body.dataset.tilesLoaded = shown; });
    state.overlay.addTo(map);
    zoomHint();
  }

  function zoomHint() {
    if (!state.meta || state.drawing) { return; }
    if (api.map.getZoom() < state.meta.tiles.minzoom) {
      setStatus('Zoom in to see the ' + state.product.toUpperCase() + ' map (from zoom ' +
        state.meta.tiles.minzoom + '); dashed boxes are the scenes of ' + currentDate().date + '.');
    } else if (!state.lastStatusKeep) {
      setStatus('Click the map for a time series, or draw a field.');
    }
  }

  function drawLegend() {
    var p = state.meta.products[state.product];
    var ramp = p.ramp;
    var span = ramp.max - ramp.min;
    var stops = ramp.stops.map(function (s) {
      return s[1] + ' ' + fmt((s[0] - ramp.min) / span * 100, 2) + '%';
    });
    var el = $('r2r-legend');
    el.innerHTML = '';
    var title = document.createElement('div');
    title.className = 'r2r-legend-title';
    title.textContent = p.title + (p.unit ? ' (' + p.unit.replace('m2/m2', 'm²/m²') + ')' : '') +
      '; no data and clouds are transparent';
    var bar = document.createElement('div');
    bar.className = 'r2r-legend-bar';
    bar.style.background = 'linear-gradient(to right, ' + stops.join(', ') + ')';
    var ticks = document.createElement('div');
    ticks.className = 'r2r-legend-ticks';
    [ramp.min, (ramp.min + ramp.max) / 2, ramp.max].forEach(function (v) {
      var s = document.createElement('span');
      s.textContent = String(Math.round(v * 100) / 100);
      ticks.appendChild(s);
    });
    el.appendChild(title);
    el.appendChild(bar);
    el.appendChild(ticks);
  }

  function setupGoto() {
    var tiles = {};
    state.meta.items.forEach(function (it) {
      var b = tiles[it.tile];
      tiles[it.tile] = b ? [Math.min(b[0], it.bbox[0]), Math.min(b[1], it.bbox[1]), Math.max(b[2], it.bbox[2]),
        Math.max(b[3], it.bbox[3])] : it.bbox.slice();
    });
    var sel = $('r2r-goto');
    var first = document.createElement('option');
    first.textContent = 'all scenes';
    first.value = '';
    sel.appendChild(first);
    Object.keys(tiles).sort().forEach(function (tile) {
      var o = document.createElement('option');
      o.value = tile;
      o.textContent = tile;
      sel.appendChild(o);
    });
    sel.addEventListener('change', function () {
      var b = sel.value ? tiles[sel.value] : state.meta.bbox;
      api.map.fitBounds([[b[1], b[0]], [b[3], b[2]]], { padding: [10, 10] });
    });
  }

  // ---------------------------------------------------------------------------------------- EDR queries
  function pointWkt(lat, lon) { return 'POINT(' + fmt(lon, 7) + ' ' + fmt(lat, 7) + ')'; }

  function polygonWkt(latlngs) {
    var ring = latlngs.concat([latlngs[0]]).map(function (ll) { return fmt(ll[1], 7) + ' ' + fmt(ll[0], 7); });
    return 'POLYGON((' + ring.join(',') + '))';
  }

  function edrUrl(collection, query, wkt, extra) {
    return 'collections/' + collection + '/' + query + '?coords=' + encodeURIComponent(wkt) + (extra || '') +
      '&f=json';
  }

  function maskNote(cov, i) {
    var cm = cov.ranges.cloud_mask;
    if (!cm) { return 'no data'; }
    var c = cm.values[i];
    if (c === null || c === undefined) { return 'no data'; }
    return c === 0 ? 'no data (invalid reflectance)' : 'masked: ' + (CLOUD_CLASSES[c] || 'class ' + c);
  }

  /** A PointSeries coverage → {t, values, notes}: the collection's main parameter, nulls kept. */
  function pointSeries(collection, cov) {
    var t = cov.domain.axes.t.values.slice();
    var values = cov.ranges[collection].values.slice();
    var notes = values.map(function (v, i) { return v === null ? maskNote(cov, i) : ''; });
    return { t: t, values: values, notes: notes };
  }

  /** A CoverageCollection of Grids → per-date mean of the non-null pixels of `param` (null where none). */
  function areaMeanSeries(param, doc) {
    var acc = {};
    (doc.coverages || []).forEach(function (cov) {
      var times = cov.domain.axes.t.values;
      var range = cov.ranges[param];
      if (!range) { return; }
      var per = range.values.length / times.length;
      for (var ti = 0; ti < times.length; ti++) {
        var a = acc[times[ti]] || (acc[times[ti]] = { sum: 0, n: 0 });
        for (var k = ti * per; k < (ti + 1) * per; k++) {
          var v = range.values[k];
          if (v !== null) { a.sum += v; a.n += 1; }
        }
      }
    });
    var t = Object.keys(acc).sort();
    return {
      t: t,
      values: t.map(function (k) { return acc[k].n ? acc[k].sum / acc[k].n : null; }),
      counts: t.map(function (k) { return acc[k].n; }),
      notes: t.map(function (k) { return acc[k].n ? '' : 'no clear pixel in the field'; })
    };
  }

  function runQuery(kind, wkt, label) {
    var token = ++state.token;
    var section = $('r2r-series');
    section.dataset.status = 'loading';
    section.dataset.kind = kind;
    section.dataset.wkt = wkt;
    setStatus('Querying ' + label + '…');
    state.lastStatusKeep = true;
    var requests = {};
    var jobs = COLLECTIONS.map(function (c) {
      var url = kind === 'point' ? edrUrl(c, 'position', wkt) : edrUrl(c, 'area', wkt, '&parameter-name=' + c);
      requests[c] = new URL(url, document.baseURI).href;
      return fetchJSON(url).then(function (doc) {
        return kind === 'point' ? pointSeries(c, doc) : areaMeanSeries(c, doc);
      });
    });
    return Promise.allSettled(jobs).then(function (results) {
      if (token !== state.token) { return; } // a newer query superseded this one
      var out = { kind: kind, wkt: wkt, label: label, requests: requests, series: {}, errors: {} };
      results.forEach(function (r, i) {
        var c = COLLECTIONS[i];
        if (r.status === 'fulfilled') { out.series[c] = r.value; } else { out.errors[c] = r.reason.message; }
      });
      api.lastSeries = out;
      state.results[kind] = out;
      redrawCharts();
      var failed = Object.keys(out.errors);
      $('r2r-series-title').textContent = 'Time series: ' + label;
      section.dataset.status = failed.length === COLLECTIONS.length ? 'error' : 'done';
      section.dataset.seq = String(++state.seq);
      setStatus(failed.length ? failed.map(function (c) { return c.toUpperCase() + ': ' + out.errors[c]; }).join('; ')
        : label + ': ' + COLLECTIONS.map(function (c) {
          return out.series[c].values.filter(function (v) { return v !== null; }).length + '/' +
            out.series[c].values.length + ' ' + c.toUpperCase() + ' dates with data';
        }).join(', '), failed.length > 0);
    });
  }

  function queryPoint(lat, lon) {
    var map = api.map;
    if (state.marker) { map.removeLayer(state.marker); }
    state.marker = L.circleMarker([lat, lon], {
      radius: 6, color: '#fff', weight: 2, fillColor: '#212529', fillOpacity: 1, interactive: false
    }).addTo(map);
    return runQuery('point', pointWkt(lat, lon), 'point ' + fmt(lat, 5) + ', ' + fmt(lon, 5));
  }

  function queryArea(latlngs) {
    if (state.field) { api.map.removeLayer(state.field); }
    state.field = L.polygon(latlngs, { color: '#d63384', weight: 2, fillOpacity: 0.1, interactive: false })
      .addTo(api.map);
    return runQuery('area', polygonWkt(latlngs), 'field mean (' + latlngs.length + ' corners)');
  }

  // ---------------------------------------------------------------------------------------- drawing
  function startDrawing() {
    cancelDrawing();
    if (state.field) { api.map.removeLayer(state.field); state.field = null; }
    state.drawing = { vertices: [], layer: L.layerGroup().addTo(api.map) };
    api.map.doubleClickZoom.disable();
    $('r2r-map').classList.add('r2r-drawing');
    $('r2r-draw').disabled = true;
    setStatus('Click the corners of the field; Finish (or Enter, or a double click) closes it, Esc cancels.');
  }

  function redrawDrawing() {
    var d = state.drawing;
    d.layer.clearLayers();
    if (d.vertices.length >= 2) {
      var shape = d.vertices.length >= 3 ? L.polygon(d.vertices, { dashArray: '5 5' }) : L.polyline(d.vertices);
      shape.setStyle({ color: '#d63384', weight: 2, fillOpacity: 0.05, interactive: false });
      d.layer.addLayer(shape);
    }
    d.vertices.forEach(function (v) {
      d.layer.addLayer(L.circleMarker(v, { radius: 4, color: '#d63384', fillColor: '#fff', fillOpacity: 1,
        weight: 2, interactive: false }));
    });
    $('r2r-finish').disabled = d.vertices.length < 3;
  }

  function addVertex(latlng) {
    var d = state.drawing;
    var last = d.vertices[d.vertices.length - 1];
    if (last && api.map.latLngToContainerPoint(last).distanceTo(api.map.latLngToContainerPoint(latlng)) < 3) {
      return; // the second click of a double click
    }
    d.vertices.push([latlng.lat, latlng.lng]);
    redrawDrawing();
  }

  function endDrawing() {
    var d = state.drawing;
    if (!d) { return null; }
    api.map.removeLayer(d.layer);
    state.drawing = null;
    api.map.doubleClickZoom.enable();
    $('r2r-map').classList.remove('r2r-drawing');
    $('r2r-draw').disabled = false;
    $('r2r-finish').disabled = true;
    return d.vertices;
  }

  function finishDrawing() {
    if (!state.drawing || state.drawing.vertices.length < 3) { return; }
    queryArea(endDrawing());
  }

  function cancelDrawing() {
    if (state.drawing) { endDrawing(); setStatus('Drawing cancelled.'); }
  }

  // ---------------------------------------------------------------------------------------- charts
  function niceStep(range, n) {
    var raw = range / n;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  }

  function el(name, attrs, parent, text) {
    var e = document.createElementNS(SVGNS, name);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function redrawCharts() {
    COLLECTIONS.forEach(function (c) { drawChart($('r2r-chart-' + c), c); });
  }

  var DAY_MS = 864e5;

  /** Time ticks on whole days or whole months (UTC), at most `n` of them: [[ms, label], ...]. */
  function timeTicks(t0, t1, n) {
    var out = [];
    var span = t1 - t0;
    if (span <= 120 * DAY_MS) {
      var days = [1, 2, 5, 7, 14, 28].filter(function (d) { return span / (d * DAY_MS) <= n; })[0] || 28;
      for (var t = Math.ceil(t0 / DAY_MS) * DAY_MS; t <= t1; t += days * DAY_MS) {
        out.push([t, new Date(t).toISOString().slice(0, 10)]);
      }
      return out;
    }
    var months = [1, 2, 3, 6, 12, 24, 60].filter(function (m) { return span / (m * 30.44 * DAY_MS) <= n; })[0] || 120;
    var d0 = new Date(t0);
    var m = d0.getUTCFullYear() * 12 + d0.getUTCMonth() + 1;
    m = Math.ceil(m / months) * months;
    for (; ; m += months) {
      var tm = Date.UTC(Math.floor(m / 12), m % 12, 1);
      if (tm > t1) { break; }
      out.push([tm, months >= 12 ? String(Math.floor(m / 12)) : new Date(tm).toISOString().slice(0, 7)]);
    }
    return out;
  }

  /** The series to plot for a collection: the last field mean and the last pixel, each when present. */
  function plotted(collection) {
    var out = [];
    ['area', 'point'].forEach(function (kind) {
      var q = state.results[kind];
      if (q && q.series[collection]) { out.push({ kind: kind, query: q, s: q.series[collection] }); }
    });
    return out;
  }

  function drawChart(svg, collection) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var W = svg.clientWidth || 520;
    var H = svg.clientHeight || 200;
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    var meta = state.meta && state.meta.products[collection];
    var name = meta ? meta.title : collection.toUpperCase();
    var unit = meta && meta.unit ? ' (' + meta.unit.replace('m2/m2', 'm²/m²') + ')' : '';
    var last = api.lastSeries;
    // the last query's values, for scripts and tests
    if (last && last.series[collection]) {
      svg.dataset.times = JSON.stringify(last.series[collection].t);
      svg.dataset.values = JSON.stringify(last.series[collection].values);
      svg.dataset.kind = last.kind;
      svg.dataset.status = 'done';
    } else {
      delete svg.dataset.times;
      delete svg.dataset.values;
      delete svg.dataset.kind;
      svg.dataset.status = last && last.errors[collection] ? 'error' : 'empty';
    }
    var series = plotted(collection);
    el('text', { x: 12, y: 16, class: 'r2r-title' }, svg, name + unit);
    if (!series.length) {
      el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'r2r-empty' }, svg,
        last && last.errors[collection] ? last.errors[collection] : 'Click the map or draw a field.');
      return;
    }
    var M = { l: 46, r: 16, t: 26, b: 26 };
    var pw = W - M.l - M.r;
    var ph = H - M.t - M.b;
    var ts = [];
    var vals = [];
    series.forEach(function (e) {
      e.ms = e.s.t.map(function (x) { return Date.parse(x); });
      ts = ts.concat(e.ms);
      vals = vals.concat(e.s.values.filter(function (v) { return v !== null; }));
    });
    var t0 = Math.min.apply(null, ts);
    var t1 = Math.max.apply(null, ts);
    if (!(t1 > t0)) { t0 -= 15 * DAY_MS; t1 += 15 * DAY_MS; }
    var pad = (t1 - t0) * 0.03;
    t0 -= pad; t1 += pad;
    var lo = collection === 'ndvi' ? -0.2 : 0;
    var hi = collection === 'ndvi' ? 1 : 2;
    if (vals.length) {
      lo = Math.min(lo, Math.min.apply(null, vals));
      hi = Math.max(hi, Math.max.apply(null, vals));
    }
    var step = niceStep(hi - lo, 4);
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
    function X(t) { return M.l + (t - t0) / (t1 - t0) * pw; }
    function Y(v) { return M.t + (hi - v) / (hi - lo) * ph; }

    for (var v = lo; v <= hi + step / 2; v += step) {
      var y = Y(v);
      el('line', { x1: M.l, x2: M.l + pw, y1: y, y2: y, class: 'r2r-grid' }, svg);
      el('text', { x: M.l - 5, y: y + 3, 'text-anchor': 'end', class: 'r2r-tick' }, svg,
        String(Math.round(v * 1000) / 1000));
    }
    timeTicks(t0, t1, Math.max(2, Math.floor(pw / 80))).forEach(function (tk) {
      var x = X(tk[0]);
      el('line', { x1: x, x2: x, y1: M.t + ph, y2: M.t + ph + 4, class: 'r2r-axis' }, svg);
      el('text', { x: x, y: H - 8, 'text-anchor': 'middle', class: 'r2r-tick' }, svg, tk[1]);
    });
    el('line', { x1: M.l, x2: M.l + pw, y1: M.t + ph, y2: M.t + ph, class: 'r2r-axis' }, svg);
    el('line', { x1: M.l, x2: M.l, y1: M.t, y2: M.t + ph, class: 'r2r-axis' }, svg);
    if (state.meta) { // the date shown on the map
      var cur = Date.parse(currentDate().date + 'T12:00:00Z');
      if (cur >= t0 && cur <= t1) {
        el('line', { x1: X(cur), x2: X(cur), y1: M.t, y2: M.t + ph, class: 'r2r-current' }, svg);
      }
    }
    var legendX = W - M.r;
    series.forEach(function (e) { // the field first, the pixel on top
      var colour = e.kind === 'area' ? FIELD_COLOUR : COLOURS[collection];
      var n = e.s.values.filter(function (x) { return x !== null; }).length;
      var g = el('g', { class: 'r2r-series', 'data-kind': e.kind, 'data-times': JSON.stringify(e.s.t),
        'data-values': JSON.stringify(e.s.values) }, svg);
      // gaps: dates without a value, a dashed rule and a cross on the axis (never drawn as zero)
      e.s.values.forEach(function (val, k) {
        if (val !== null) { return; }
        var x = X(e.ms[k]);
        var gg = el('g', { class: 'r2r-gap-group', 'data-t': e.s.t[k] }, g);
        el('title', {}, gg, dayOf(e.s.t[k]) + (e.kind === 'area' ? ' (field): ' : ' (pixel): ') +
          (e.s.notes[k] || 'no data'));
        el('line', { x1: x, x2: x, y1: M.t, y2: M.t + ph, class: 'r2r-gap' }, gg);
        el('text', { x: x, y: M.t + ph - 3, 'text-anchor': 'middle', class: 'r2r-gap-mark', fill: colour }, gg, '×');
      });
      // the line, broken at every gap
      var d = '';
      var pen = false;
      e.s.values.forEach(function (val, k) {
        if (val === null) { pen = false; return; }
        d += (pen ? 'L' : 'M') + X(e.ms[k]).toFixed(1) + ' ' + Y(val).toFixed(1);
        pen = true;
      });
      if (d) {
        el('path', { d: d, class: 'r2r-line', stroke: colour, 'stroke-dasharray': e.kind === 'area' ? '6 3' : 'none' },
          g);
      }
      e.s.values.forEach(function (val, k) {
        if (val === null) { return; }
        var c = el('circle', { cx: X(e.ms[k]), cy: Y(val), r: 3.5, class: 'r2r-point', fill: colour,
          'data-t': e.s.t[k], 'data-value': String(val) }, g);
        el('title', {}, c, dayOf(e.s.t[k]) + ': ' + (Math.round(val * 10000) / 10000) +
          (e.s.counts ? ' (field mean of ' + e.s.counts[k] + ' pixels)' : ' (pixel)'));
        c.addEventListener('click', function () {
          var idx = state.meta.dates.findIndex(function (x) { return x.date === dayOf(e.s.t[k]); });
          if (idx >= 0) { setDate(idx); }
        });
      });
      var label = (e.kind === 'area' ? 'field mean' : 'pixel') + ' (' + n + '/' + e.s.values.length + ' dates)';
      var txt = el('text', { x: legendX, y: 16, 'text-anchor': 'end', class: 'r2r-tick', fill: colour }, svg, label);
      var w = txt.getComputedTextLength ? txt.getComputedTextLength() : label.length * 5.5;
      el('line', { x1: legendX - w - 22, x2: legendX - w - 6, y1: 12, y2: 12, stroke: colour, 'stroke-width': 2,
        'stroke-dasharray': e.kind === 'area' ? '6 3' : 'none' }, svg);
      legendX -= w + 34;
    });
  }

  // ---------------------------------------------------------------------------------------- start
  function init(meta) {
    state.meta = meta;
    var box = $('r2r-map');
    var map = L.map(box, { maxZoom: meta.tiles.maxzoom });
    api.map = map;
    var basemap = null;
    try { basemap = JSON.parse(box.dataset.basemap || 'null'); } catch (e) { basemap = null; }
    if (basemap && basemap.url) {
      L.tileLayer(basemap.url, { attribution: basemap.attribution || '', maxZoom: meta.tiles.maxzoom,
        maxNativeZoom: 19 }).addTo(map);
    }
    L.control.scale({ imperial: false }).addTo(map);

    var slider = $('r2r-date');
    slider.max = String(Math.max(0, meta.dates.length - 1));
    slider.addEventListener('input', function () { setDate(slider.value); });
    $('r2r-date-prev').addEventListener('click', function () { setDate(state.dateIndex - 1); });
    $('r2r-date-next').addEventListener('click', function () { setDate(state.dateIndex + 1); });
    document.querySelectorAll('input[name="r2r-product"]').forEach(function (r) {
      r.addEventListener('change', function () { if (r.checked) { setProduct(r.value); } });
    });
    $('r2r-draw').addEventListener('click', startDrawing);
    $('r2r-finish').addEventListener('click', finishDrawing);
    $('r2r-clear').addEventListener('click', function () {
      cancelDrawing();
      if (state.field) { map.removeLayer(state.field); state.field = null; }
      if (state.marker) { map.removeLayer(state.marker); state.marker = null; }
      state.token++;
      api.lastSeries = null;
      state.results = { point: null, area: null };
      $('r2r-series').dataset.status = 'empty';
      $('r2r-series-title').textContent = 'Time series';
      redrawCharts();
    });
    document.addEventListener('keydown', function (ev) {
      if (!state.drawing) { return; }
      if (ev.key === 'Enter') { finishDrawing(); } else if (ev.key === 'Escape') { cancelDrawing(); }
    });
    map.on('click', function (ev) {
      if (state.drawing) { addVertex(ev.latlng); } else { queryPoint(ev.latlng.lat, ev.latlng.lng); }
    });
    map.on('dblclick', function () { if (state.drawing) { finishDrawing(); } });
    map.on('zoomend', zoomHint);
    window.addEventListener('resize', redrawCharts);

    if (!meta.dates.length) {
      map.setView([0, 0], 2);
      setStatus('The catalog has no items yet.', true);
      redrawCharts();
      return;
    }
    setupGoto();
    drawLegend();
    var latest = meta.dates.length - 1;
    var first = meta.items.filter(function (it) { return it.id === meta.dates[latest].items[0]; })[0];
    var b = first.bbox;
    map.fitBounds([[b[1], b[0]], [b[3], b[2]]], { padding: [10, 10] });
    setDate(latest);
    api.ready = true;
    document.body.dataset.viewerReady = 'true';
  }

  fetchJSON('viewer/items.json').then(init).catch(function (err) {
    setStatus('Could not load the catalog: ' + err.message, true);
  });
}());
