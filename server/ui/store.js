// What the page keeps in the browser: conversations and chat settings (localStorage), the
// theme. Nothing leaves the browser except the requests the page sends to the server.

const CONVERSATIONS = "onnxg.conversations";
const SETTINGS = "onnxg.settings";
const THEME = "onnxg.theme";

function read(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false; // storage full or disabled: the page still works, it just forgets
  }
}

export const conversations = {
  all() {
    const list = read(CONVERSATIONS, []);
    return Array.isArray(list) ? list.filter((c) => c && c.id && Array.isArray(c.messages)) : [];
  },
  save(list) {
    return write(CONVERSATIONS, list);
  },
  create() {
    return { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: "New chat",
      titled: false, updated: Date.now(), messages: [] };
  },
};

export const settings = {
  load() {
    const value = read(SETTINGS, {});
    return value && typeof value === "object" ? value : {};
  },
  save(value) {
    write(SETTINGS, value);
  },
};

export const theme = {
  load() {
    return read(THEME, null);
  },
  save(value) {
    write(THEME, value);
  },
};
