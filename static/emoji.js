// Unicode emoji for the panel: sent as text (media 1), drawn by the system's emoji font.
// fastIM sent GIF URLs from a pack that was partly missing; text needs no files at all.
export const EMOJI = [
  ...'😀😃😄😁😆😅🤣😂🙂😉😊😇🥰😍🤩😘😗😚😋😛😜🤪😝🤗🤭🤫🤔🤐🤨😐😑😶😏😒🙄😬😌😔😪🤤😴😷🤒🤕🤢🤮🥵🥶🥴😵🤯🤠🥳😎🤓🧐😕😟🙁😮😯😲😳🥺😦😧😨😰😥😢😭😱😖😣😞😓😩😫🥱😤😡😠🤬😈👿💀💩🤡👻👽🤖',
  ...'👋🤚✋🖖👌🤌🤏✌🤞🤟🤘🤙👈👉👆👇☝👍👎✊👊🤛🤜👏🙌👐🤲🤝🙏💪',
  ...'❤🧡💛💚💙💜🖤🤍💔💕💞💓💗💖💘💝✨🔥⭐🌟💯✅❌❓❗💤🎉🎊🎁🎂🍰☕🍵🍺🍻🥂🍕🍔🍟🍜🍣🍎🍉🌹🌸🌞🌙⛅☔⚡❄🐶🐱🐼🐷🐸🐵🐔🐧',
].map((c) => (/[\u2600-\u27ff]/.test(c) ? `${c}\ufe0f` : c));
