// The vstream page: publish the camera, the screen or a test pattern over a WebSocket
// (MediaRecorder blobs, SPEC §1), list live and recorded streams, play them with hls.js.
// No framework, no build step. Query parameters prefill the form: ?channel=&key=&source=&size=
// (and mime= to force a MediaRecorder type).
'use strict';
(() => {
  // Keep in step with web/package.json (a test checks it): the CDN copy is used when
  // web/node_modules is missing (the server then answers 404 for /web/hls.min.js).
  const HLS_VERSION = '1.7.4';
  const HLS_LOCAL = '/web/hls.min.js';
  const HLS_CDN = `https://cdn.jsdelivr.net/npm/hls.js@${HLS_VERSION}/dist/hls.min.js`;
  const MIME_TYPES = [
    'video/webm;codecs=vp8,opus',
    'video/webm;codecs=vp9,opus',
    'video/webm;codecs=h264,opus',
    'video/webm',
    'video/mp4;codecs=avc1,mp4a.40.2', // Safari
    'video/mp4;codecs=avc1,opus',
    'video/mp4',
  ];
  const ID = /^[A-Za-z0-9_-]+$/;

  const $ = (selector) => document.querySelector(selector);
  const query = new URLSearchParams(location.search);
  const setStatus = (el, state, text) => {
    el.dataset.state = state;
    el.textContent = text;
  };
  const el = (tag, { dataset, ...props } = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    Object.assign(node.dataset, dataset);
    node.append(...children);
    return node;
  };
  const kb = (bytes) => `${(bytes / 1024).toFixed(0)} KB`;

  for (const id of ['channel', 'key', 'source', 'size']) {
    if (query.has(id)) $(`#${id}`).value = query.get(id);
  }

  // ------------------------------------------------------------------ sources

  const stopTracks = (stream) => stream.getTracks().forEach((t) => t.stop());

  async function openSource(kind, width, height) {
    if (kind === 'pattern') return testPattern(width, height);
    if (kind === 'screen') {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 30 }, audio: true });
      return { stream, stop: () => stopTracks(stream) };
    }
    const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video, audio: true });
    } catch (err) {
      // No microphone (or refused): video only.
      stream = await navigator.mediaDevices.getUserMedia({ video });
    }
    return { stream, stop: () => stopTracks(stream) };
  }

  // Colour bars, a moving block and a clock on a canvas, and a 440 Hz beep every second:
  // works without a camera and makes latency visible.
  function testPattern(width, height) {
    const canvas = el('canvas', { width, height });
    const ctx = canvas.getContext('2d');
    const bars = ['#c0c0c0', '#c0c000', '#00c0c0', '#00c000', '#c000c0', '#c00000', '#0000c0'];
    const t0 = performance.now();
    let frame = 0;
    const draw = () => {
      const t = (performance.now() - t0) / 1000;
      bars.forEach((colour, i) => {
        ctx.fillStyle = colour;
        ctx.fillRect((i * width) / 7, 0, width / 7 + 1, height);
      });
      const box = height / 4;
      ctx.fillStyle = '#111';
      ctx.fillRect((Math.sin(t * 2) * 0.45 + 0.5) * (width - box), height * 0.6, box, box);
      ctx.fillStyle = '#000b';
      ctx.fillRect(0, 0, width, height * 0.2);
      ctx.fillStyle = '#fff';
      ctx.font = `${Math.round(height * 0.11)}px monospace`;
      ctx.fillText(`${new Date().toISOString().slice(11, 23)} #${frame++}`, width * 0.03, height * 0.14);
    };
    draw();
    const timer = setInterval(draw, 1000 / 30);
    const video = canvas.captureStream(30);
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    const out = audio.createMediaStreamDestination();
    tone.frequency.value = 440;
    gain.gain.value = 0;
    tone.connect(gain).connect(out);
    tone.start();
    for (let s = 0; s < 3600; s++) {
      gain.gain.setValueAtTime(0.2, audio.currentTime + s);
      gain.gain.setValueAtTime(0, audio.currentTime + s + 0.15);
    }
    audio.resume().catch(() => {});
    const stream = new MediaStream([...video.getVideoTracks(), ...out.stream.getAudioTracks()]);
    return {
      stream,
      stop: () => {
        clearInterval(timer);
        stopTracks(stream);
        audio.close().catch(() => {});
      },
    };
  }

  // ------------------------------------------------------------------ publishing

  const publishStatus = $('#publish-status');
  let publishing = null;

  const wsUrl = (channel, key) =>
    `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/${channel}/${key}/publish`;

  // A refused upgrade only shows as a close (1006) to a page; the server answers a plain
  // GET of the same URL with the refusal's status and message.
  async function whyRefused(url) {
    try {
      const response = await fetch(url.replace(/^ws/, 'http'), { cache: 'no-store' });
      const text = (await response.text()).trim();
      if (response.status === 400 || response.status === 426) return 'Could not connect to the server.';
      return `Refused (${response.status}): ${text}`;
    } catch (err) {
      return 'Could not reach the server.';
    }
  }

  function bitrate(width, height) {
    const pixels = width * height;
    if (pixels >= 1280 * 720) return 2_500_000;
    if (pixels >= 640 * 360) return 900_000;
    return 300_000;
  }

  async function startPublish(event) {
    event.preventDefault();
    if (publishing) return;
    const channel = $('#channel').value.trim();
    const key = $('#key').value.trim();
    if (!ID.test(channel) || !ID.test(key)) {
      setStatus(publishStatus, 'error', 'Channel and key: letters, digits, "-" and "_" only.');
      return;
    }
    const kind = $('#source').value;
    const [width, height] = $('#size').value.split('x').map(Number);
    $('#start').disabled = true;
    setStatus(publishStatus, 'connecting', 'Opening the source…');
    let source;
    try {
      source = await openSource(kind, width, height);
    } catch (err) {
      $('#start').disabled = false;
      setStatus(publishStatus, 'error', `Cannot open the ${kind}: ${err.message || err}`);
      return;
    }
    const url = wsUrl(channel, key);
    const session = { channel, source, url, ws: null, recorder: null, sent: 0, error: null, opened: false, timers: [] };
    publishing = session;
    $('#stop').disabled = false;
    const local = $('#local');
    local.srcObject = source.stream;
    local.hidden = false;
    setStatus(publishStatus, 'connecting', 'Connecting…');

    const ws = new WebSocket(url);
    session.ws = ws;
    ws.onopen = () => {
      session.opened = true;
      startRecorder(session, width, height);
    };
    ws.onmessage = (message) => {
      if (typeof message.data !== 'string') return;
      if (message.data.startsWith('ERROR:')) {
        session.error = message.data;
        setStatus(publishStatus, 'error', message.data);
      }
    };
    ws.onclose = async (close) => {
      if (publishing !== session) return; // stopped by the user
      let text = session.error;
      if (!session.opened) text = await whyRefused(url);
      else if (!text && close.code !== 1000) {
        text = `Connection closed (${close.code}${close.reason ? `: ${close.reason}` : ''}).`;
      }
      endPublish(session, text ? 'error' : 'idle', text || 'The server ended the stream.');
    };
  }

  function startRecorder(session, width, height) {
    const mimeType = query.get('mime') || MIME_TYPES.find((t) => MediaRecorder.isTypeSupported(t)) || '';
    let recorder;
    try {
      recorder = new MediaRecorder(session.source.stream, {
        mimeType,
        videoBitsPerSecond: bitrate(width, height),
        audioBitsPerSecond: 96_000,
        // Chromium: a keyframe every 2 s, so that a decoder can join quickly.
        videoKeyFrameIntervalDuration: 2000,
      });
    } catch (err) {
      endPublish(session, 'error', `This browser cannot record ${mimeType || 'video'}: ${err.message}`);
      return;
    }
    session.recorder = recorder;
    recorder.ondataavailable = (blob) => {
      if (blob.data.size > 0 && session.ws.readyState === WebSocket.OPEN) {
        session.ws.send(blob.data); // one binary frame per blob, in order
        session.sent += blob.data.size;
      }
    };
    recorder.onerror = (err) => endPublish(session, 'error', `Recording failed: ${err.error?.message || err}`);
    recorder.onstop = () => {
      if (session.ws.readyState === WebSocket.OPEN) session.ws.close(1000, 'done');
      session.source.stop();
    };
    recorder.start(500);
    const type = (recorder.mimeType || mimeType).replace(/;\s*/, ' ');
    const update = () => {
      if (session.error || publishing !== session) return;
      const backlog = session.ws.bufferedAmount;
      const slow = backlog > 4 * 1024 * 1024 ? ` — network too slow, ${kb(backlog)} waiting` : '';
      setStatus(publishStatus, 'live', `Live on “${session.channel}”: ${kb(session.sent)} sent (${type})${slow}`);
    };
    update();
    session.timers.push(setInterval(update, 1000));
    session.timers.push(setInterval(() => session.ws.readyState === WebSocket.OPEN && session.ws.send('h'), 20_000));
  }

  // Ends a session: the recorder, the source, the socket, the buttons.
  function endPublish(session, state, text) {
    if (publishing === session) publishing = null;
    session.timers.forEach(clearInterval);
    if (session.recorder && session.recorder.state !== 'inactive') {
      session.recorder.onstop = null;
      session.recorder.ondataavailable = null;
      session.recorder.stop();
    }
    session.source.stop();
    if (session.ws && session.ws.readyState <= WebSocket.OPEN) session.ws.close(1000, 'done');
    $('#local').srcObject = null;
    $('#local').hidden = true;
    $('#start').disabled = false;
    $('#stop').disabled = true;
    setStatus(publishStatus, state, text);
  }

  // Stop: the recorder delivers its last blob, then the socket is closed.
  function stopPublish() {
    const session = publishing;
    if (!session) return;
    publishing = null;
    session.timers.forEach(clearInterval);
    if (session.recorder && session.recorder.state !== 'inactive') session.recorder.stop();
    else endPublish(session, 'idle', 'Stopped.');
    $('#local').srcObject = null;
    $('#local').hidden = true;
    $('#start').disabled = false;
    $('#stop').disabled = true;
    setStatus(publishStatus, 'idle', 'Stopped.');
  }

  $('#publish-form').addEventListener('submit', startPublish);
  $('#stop').addEventListener('click', stopPublish);

  // ------------------------------------------------------------------ player

  const player = $('#player');
  const playerStatus = $('#player-status');
  const rendition = $('#rendition');
  let playing = null;
  let hlsLoading = null;

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = el('script', { src });
      script.onload = resolve;
      script.onerror = () => {
        script.remove();
        reject(new Error(`cannot load ${src}`));
      };
      document.head.append(script);
    });
  }

  function loadHls() {
    if (window.Hls) return Promise.resolve(window.Hls);
    hlsLoading ||= loadScript(HLS_LOCAL)
      .catch(() => loadScript(HLS_CDN))
      .then(() => window.Hls);
    return hlsLoading;
  }

  function stopPlayer() {
    if (!playing) return;
    playing.timers.forEach(clearInterval);
    if (playing.hls) playing.hls.destroy();
    player.removeAttribute('src');
    player.load();
    playing = null;
    rendition.replaceChildren(el('option', { value: '-1', textContent: 'Auto' }));
    rendition.disabled = true;
    $('#level').textContent = '';
    $('#latency').textContent = '';
    $('#previews').hidden = true;
  }

  async function play({ url, label, live, previews }) {
    stopPlayer();
    const session = { url, live, hls: null, timers: [] };
    playing = session;
    $('#now-playing').textContent = label;
    setStatus(playerStatus, 'loading', `Loading ${label}…`);
    const Hls = await loadHls().catch(() => null);
    if (playing !== session) return;
    if (Hls && Hls.isSupported()) {
      const hls = new Hls({ liveSyncDurationCount: 3, maxLiveSyncPlaybackRate: 1.5 });
      session.hls = hls;
      hls.on(Hls.Events.MANIFEST_PARSED, () => {
        rendition.replaceChildren(
          el('option', { value: '-1', textContent: 'Auto' }),
          ...hls.levels.map((level, i) =>
            el('option', { value: String(i), textContent: `${level.height}p · ${Math.round(level.bitrate / 1000)} kbit/s` }),
          ),
        );
        rendition.disabled = hls.levels.length < 2;
        player.play().catch(() => setStatus(playerStatus, 'paused', 'Press play.'));
      });
      hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
        const level = hls.levels[data.level];
        if (level) $('#level').textContent = `${level.width}×${level.height}${hls.autoLevelEnabled ? ' (auto)' : ''}`;
      });
      hls.on(Hls.Events.ERROR, (_, data) => {
        if (!data.fatal) return;
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        } else if (data.type === Hls.ErrorTypes.NETWORK_ERROR && live) {
          setStatus(playerStatus, 'loading', 'Waiting for the stream…');
          setTimeout(() => playing === session && hls.startLoad(), 1500);
        } else {
          setStatus(playerStatus, 'error', `Playback error: ${data.details}`);
        }
      });
      hls.loadSource(url);
      hls.attachMedia(player);
    } else if (player.canPlayType('application/vnd.apple.mpegurl')) {
      player.src = url; // Safari plays HLS itself
      player.play().catch(() => {});
    } else {
      setStatus(playerStatus, 'error', 'This browser cannot play HLS (hls.js did not load).');
      return;
    }
    if (live) {
      session.timers.push(setInterval(() => {
        // Behind the newest segment, and behind the wall clock (EXT-X-PROGRAM-DATE-TIME).
        const behind = session.hls ? session.hls.latency : liveEdge() - player.currentTime;
        const date = session.hls ? session.hls.playingDate : player.getStartDate?.();
        const clock = date && date.getTime() ? (Date.now() - date.getTime()) / 1000 : NaN;
        if (!Number.isFinite(behind) || behind <= 0) return;
        $('#latency').textContent = `Latency ${behind.toFixed(1)} s behind the live edge` +
          (Number.isFinite(clock) && clock > 0 ? `, ${clock.toFixed(1)} s behind real time` : '');
      }, 500));
    }
    if (previews) showPreviews(session, previews);
  }

  function liveEdge() {
    const ranges = player.seekable;
    return ranges.length ? ranges.end(ranges.length - 1) : NaN;
  }

  rendition.addEventListener('change', () => {
    if (playing && playing.hls) playing.hls.currentLevel = Number(rendition.value);
  });
  player.addEventListener('playing', () => setStatus(playerStatus, 'playing', 'Playing.'));
  player.addEventListener('waiting', () => playing && setStatus(playerStatus, 'loading', 'Buffering…'));
  player.addEventListener('ended', () => setStatus(playerStatus, 'idle', 'Ended.'));

  // Preview images: the latest few of index.json ({"index_start","count","pattern"}).
  function showPreviews(session, indexUrl) {
    const dir = indexUrl.slice(0, indexUrl.lastIndexOf('/') + 1);
    const load = async () => {
      try {
        const index = await (await fetch(indexUrl, { cache: 'no-store' })).json();
        if (playing !== session || !index.count) return;
        const last = index.index_start + index.count - 1;
        const images = [];
        for (let i = last; i >= Math.max(index.index_start, last - 5); i--) {
          images.push(el('img', { src: dir + index.pattern.replace('%d', i), alt: `preview ${i}`, loading: 'lazy' }));
        }
        $('#preview-images').replaceChildren(...images);
        $('#previews').hidden = false;
      } catch (err) {
        // Not there yet.
      }
    };
    load();
    session.timers.push(setInterval(load, 5000));
  }

  // ------------------------------------------------------------------ stream lists

  let lastLive = '';
  let lastRecorded = '';

  function renderLive(streams) {
    const json = JSON.stringify(streams);
    if (json === lastLive) return;
    lastLive = json;
    const rows = streams.map((s) =>
      el('tr', { dataset: { channel: s.channel, stream: s.streamId } },
        el('td', {}, s.channel),
        el('td', {}, el('code', { title: s.streamId }, s.streamId.slice(0, 12) + '…')),
        el('td', {}, s.ready ? 'live' : 'starting…'),
        el('td', {}, el('button', {
          className: 'watch',
          textContent: 'Watch',
          onclick: () => play({ url: s.master, label: `${s.channel} (live)`, live: true, previews: s.previews }),
        })),
      ));
    $('#live-list').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colSpan: 4, className: 'muted' }, 'Nothing live.'))]));
  }

  function renderRecorded(streams) {
    const json = JSON.stringify(streams);
    if (json === lastRecorded) return;
    lastRecorded = json;
    const rows = streams.map((s) => {
      const best = s.renditions[0];
      const buttons = best.vod.map((url, part) => el('button', {
        className: 'play',
        textContent: best.vod.length > 1 ? `Part ${part + 1}` : 'Play',
        onclick: () => play({ url, label: `${s.channel} (recording ${best.name})`, live: false }),
      }));
      return el('tr', { dataset: { channel: s.channel, stream: s.streamId } },
        el('td', {}, s.channel),
        el('td', {}, el('code', { title: s.streamId }, s.streamId.slice(0, 12) + '…')),
        el('td', {}, new Date(s.modified * 1000).toLocaleString()),
        el('td', {}, s.renditions.map((r) => r.name).join(', ')),
        el('td', {}, ...buttons));
    });
    $('#recorded-list').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colSpan: 5, className: 'muted' }, 'No recordings.'))]));
  }

  async function refresh() {
    try {
      const response = await fetch('/api/streams', { cache: 'no-store' });
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      renderLive(data.live);
      renderRecorded(data.recorded);
      const host = location.hostname;
      $('#rtmp-url').textContent = `rtmp://${host}:${data.rtmpPort}/{channel}` +
        (data.rtmpsPort ? ` (or rtmps://${host}:${data.rtmpsPort}/{channel})` : '');
      $('#server-status').textContent = `${data.live.length} live`;
    } catch (err) {
      $('#server-status').textContent = 'server unreachable';
    }
  }

  $('#ws-url').textContent = wsUrl('{channel}', '{key}');
  refresh();
  setInterval(refresh, 3000);
})();
